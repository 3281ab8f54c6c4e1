import { isUnixSocket } from '../host/unix-socket.js'

/** How every RDS host name ends: `.rds.amazonaws.com`, or `.rds.amazonaws.com.cn` in China. */
const RDS_DOMAIN = String.raw`\.rds\.amazonaws\.com(?:\.cn)?$`
const RDS_HOST = new RegExp(RDS_DOMAIN, 'i')
/** `<name>.<id>.<region>.rds.amazonaws.com`: the region is the label before the RDS domain. */
const RDS_HOST_REGION = new RegExp(String.raw`\.([a-z]{2}(?:-[a-z]+)+-\d+)${RDS_DOMAIN}`, 'i')

/**
 * Amazon RDS and Aurora endpoints (commercial and China partitions). They get `'rds'` by default:
 * RDS serves certificates from its own CAs, which are not in Node's trust store.
 */
export function isRdsHost(host: string | undefined): boolean {
  // Not a Unix socket path, whatever its last component is called: RDS is only reached over TCP.
  return host !== undefined && !isUnixSocket(host) && RDS_HOST.test(host)
}

/**
 * RDS Proxy endpoints: the default `<proxy>.proxy-<id>.<region>.rds.amazonaws.com` and custom ones,
 * `<endpoint>.endpoint.proxy-<id>.<region>.rds.amazonaws.com`.
 */
const RDS_PROXY_HOST = new RegExp(
  String.raw`(?:^|\.)proxy-[a-z0-9]+\.[a-z]{2}(?:-[a-z]+)+-\d+${RDS_DOMAIN}`,
  'i',
)

/** An Amazon RDS Proxy endpoint (default or custom). They get `proxy: 'rds-proxy'` by default. */
export function isRdsProxyHost(host: string | undefined): boolean {
  return isRdsHost(host) && RDS_PROXY_HOST.test(host as string)
}

/** The region in an RDS host name: `<name>.<id>.<region>.rds.amazonaws.com`. */
export function regionFromRdsHost(host: string | undefined): string | undefined {
  const match = host === undefined ? null : RDS_HOST_REGION.exec(host)
  return match?.[1]?.toLowerCase()
}

/**
 * Aurora and Multi-AZ DB cluster endpoints: `<cluster>.cluster-<id>.<region>.rds.amazonaws.com`, its
 * reader endpoint `cluster-ro-<id>` and custom endpoints `cluster-custom-<id>`. Group 1 is the part
 * the cluster's instance endpoints share: `<id>.<region>.rds.amazonaws.com`.
 */
const RDS_CLUSTER_HOST = new RegExp(
  String.raw`^[^.]+\.cluster-(?:ro-|custom-)?([a-z0-9]+\.[a-z]{2}(?:-[a-z]+)+-\d+${RDS_DOMAIN.slice(0, -1)})$`,
  'i',
)

/** An Aurora or Multi-AZ DB cluster endpoint (writer, reader or custom). */
export function isRdsClusterHost(host: string | undefined): boolean {
  return isRdsHost(host) && RDS_CLUSTER_HOST.test(host as string)
}

/**
 * The instance host pattern of a cluster endpoint: its instances are reached at
 * `<instance>.<id>.<region>.rds.amazonaws.com`, so `?.<id>.<region>.rds.amazonaws.com`; `undefined`
 * for any other host.
 */
export function instanceHostPatternOf(host: string | undefined): string | undefined {
  if (!isRdsClusterHost(host)) return undefined
  const domain = RDS_CLUSTER_HOST.exec(host as string)?.[1]
  return domain === undefined ? undefined : `?.${domain.toLowerCase()}`
}
