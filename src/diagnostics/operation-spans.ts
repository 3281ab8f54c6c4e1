/**
 * Names of the library's spans besides the statements' (which are named after the statement, as the
 * OpenTelemetry database conventions say): see the README's "OpenTelemetry traces".
 */
export const OPERATION_SPANS = Object.freeze({
  /** Opening one connection for an endpoint's pool. */
  connect: 'kysely-resilient connect',
  /** Finding which writer candidate accepts writes (at startup with several, and after a failure). */
  writerDiscovery: 'kysely-resilient writer discovery',
  /** Fetching credentials from `auth` (`'iam'`, `'secret'`, `'token'`). */
  credentialFetch: 'kysely-resilient credential fetch',
} as const)

/** A library span's attributes: names from the OpenTelemetry conventions or `kysely_resilient.*`, never a secret. */
export type OperationFields = Readonly<Record<string, string | number | boolean>>

/**
 * Wraps one background operation of the library (a writer discovery, a credential fetch) in a span.
 * Set by telemetry/ once `@opentelemetry/api` is loaded and the application registered a tracer
 * provider; the layers below it (auth/, topology/) only see this seam, so they never import it.
 */
export interface OperationTracer {
  trace<T>(name: string, fields: OperationFields, run: () => Promise<T>): Promise<T>
}

/**
 * Process-wide, like the tracer provider it stands for: the application registers one provider for
 * the whole process, and every db traces through it.
 */
let current: OperationTracer | undefined

/** Installs (or, with `undefined`, removes) the tracer of {@link traceOperation}. */
export function setOperationTracer(tracer: OperationTracer | undefined): void {
  current = tracer
}

/**
 * Runs `run`, in a span named `name` when tracing is on. `fields` is called only then, so without a
 * tracer the operation costs one variable test and no allocation.
 */
export function traceOperation<T>(
  name: string,
  fields: () => OperationFields,
  run: () => Promise<T>,
): Promise<T> {
  const tracer = current
  return tracer === undefined ? run() : tracer.trace(name, fields(), run)
}
