import type { APIGatewayProxyEventV2, Context } from 'aws-lambda'

/** A minimal API Gateway HTTP API (payload format 2.0) event, as the `$default` route delivers it. */
export function apiGatewayEvent(method: 'GET' | 'POST', path: string, body?: string): APIGatewayProxyEventV2 {
  const now = new Date()
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: path,
    rawQueryString: '',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    requestContext: {
      accountId: '123456789012',
      apiId: 'local',
      domainName: 'local.execute-api.localhost',
      domainPrefix: 'local',
      http: { method, path, protocol: 'HTTP/1.1', sourceIp: '127.0.0.1', userAgent: 'invoke.ts' },
      requestId: `local-${now.getTime()}-${Math.random().toString(36).slice(2)}`,
      routeKey: '$default',
      stage: '$default',
      time: now.toISOString(),
      timeEpoch: now.getTime(),
    },
    ...(body === undefined ? {} : { body }),
    isBase64Encoded: false,
  }
}

/** A Lambda context for local invocations (the handler does not use it). */
export function localContext(): Context {
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: 'lambda-users-local',
    functionVersion: '$LATEST',
    invokedFunctionArn: 'arn:aws:lambda:local:123456789012:function:lambda-users-local',
    memoryLimitInMB: '128',
    awsRequestId: `local-${Date.now()}`,
    logGroupName: '/aws/lambda/lambda-users-local',
    logStreamName: 'local',
    getRemainingTimeInMillis: () => 30_000,
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  }
}
