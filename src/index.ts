export type {
  AuthConfig,
  AuthEndpoint,
  AwsCredentials,
  IamAuthConfig,
  PasswordAuthConfig,
  SecretAuthConfig,
  TokenAuthConfig,
} from './auth/auth-config.js'
export type {
  AutoRetryConfig,
  ConsistencyConfig,
  CreateDbConfig,
  EndpointConfig,
  EndpointOptions,
  PoolConfig,
  ReaderStrategy,
  RoutingConfig,
  SqlDialect,
  TelemetryConfig,
  TopologyConfig,
} from './config/create-db-config.js'
export type { DbSettings, EndpointDescription, PoolSettings } from './config/db-settings.js'
export type {
  ConnectionHook,
  MysqlDriverOptions,
  MysqlTypeCastField,
  PostgresDriverOptions,
  PostgresTypeParsers,
} from './config/driver-options.js'
export type { ConnectionProxy } from './config/proxy.js'
export { createDb, type ReadYourWritesOptions, type ResilientDb } from './create-db.js'
export {
  type ConnectTraceContext,
  DIAGNOSTICS_CHANNELS,
  type QueryTraceContext,
} from './diagnostics/channels.js'
export type { LagSource } from './dialect/lag-queries.js'
export type { DatabasePlatform } from './dialect/topology-queries.js'
export type { EndpointStats } from './endpoint/endpoint.js'
export {
  AuthenticationFailedError,
  ConfigError,
  ConnectionHookTimeoutError,
  ConnectTimeoutError,
  CredentialSourceError,
  DatabaseDestroyedError,
  InvalidConsistencyTokenError,
  MissingDriverError,
  NoReaderAvailableError,
  PoolTimeoutError,
  QueryTimeoutError,
  ReplicationPositionUnavailableError,
  ResilientError,
  type ResilientErrorCode,
  ServerUnresponsiveError,
} from './errors.js'
export type {
  CredentialsRefreshedEvent,
  EndpointResponsiveEvent,
  EndpointUnresponsiveEvent,
  FailoverEvent,
  ReaderEjectedEvent,
  ReaderRestoredEvent,
  ResilientErrorEvent,
  ResilientEventListener,
  ResilientEventMap,
  RetryEvent,
} from './events/resilient-events.js'
export { LAMBDA_ENV_VARIABLES } from './lambda/config-from-env.js'
export { getConnection, resetConnection } from './lambda/get-connection.js'
export { LAMBDA_POOL_DEFAULTS } from './lambda/lambda-defaults.js'
export { classifyError } from './retry/classify-error.js'
export type {
  ClassifyErrorContext,
  ErrorCategory,
  ErrorClassification,
  ErrorPhase,
} from './retry/error-classification.js'
export {
  getErrorClassification,
  WITH_RETRY_DEFAULTS,
  type WithRetryInfo,
  type WithRetryOptions,
  withRetry,
} from './retry/with-retry.js'
export type { DbStats, ReaderStats } from './routing/cluster.js'
export type { TlsConfig, TlsOptions } from './tls/tls-config.js'
export type { TopologySnapshot } from './topology/topology-monitor.js'
