export type {
  CreateDbConfig,
  EndpointConfig,
  EndpointOptions,
  PoolConfig,
  ReaderStrategy,
  RoutingConfig,
  SqlDialect,
} from './config/create-db-config.js'
export { createDb, type ResilientDb } from './create-db.js'
export {
  ConfigError,
  ConnectTimeoutError,
  DatabaseDestroyedError,
  MissingDriverError,
  PoolTimeoutError,
  ResilientError,
} from './errors.js'
export type { DbStats } from './routing/cluster.js'
export type { EndpointStats } from './routing/endpoint.js'
