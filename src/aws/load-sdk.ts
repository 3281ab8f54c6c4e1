import { MissingDriverError } from '../errors.js'

/** The part of `@aws-sdk/rds-signer` that `auth: { type: 'iam' }` uses. */
export interface RdsSignerModule {
  Signer: new (config: {
    hostname: string
    port: number
    username: string
    region?: string
    credentials?: unknown
    profile?: string
  }) => { getAuthToken(): Promise<string> }
}

/** Loads `@aws-sdk/rds-signer` on first IAM token only, so nobody else needs it installed. */
export async function loadRdsSigner(): Promise<RdsSignerModule> {
  try {
    return (await import('@aws-sdk/rds-signer')) as unknown as RdsSignerModule
  } catch (error) {
    throw new MissingDriverError('@aws-sdk/rds-signer', "auth type 'iam'", error)
  }
}

/** The part of `@aws-sdk/client-secrets-manager` that `auth: { type: 'secret' }` uses. */
export interface SecretsManagerModule {
  SecretsManagerClient: new (config: {
    region?: string
  }) => {
    send(command: unknown): Promise<{ SecretString?: string }>
  }
  GetSecretValueCommand: new (input: { SecretId: string }) => unknown
}

/** Loads `@aws-sdk/client-secrets-manager` on first secret fetch only. */
export async function loadSecretsManager(): Promise<SecretsManagerModule> {
  try {
    return (await import('@aws-sdk/client-secrets-manager')) as unknown as SecretsManagerModule
  } catch (error) {
    throw new MissingDriverError('@aws-sdk/client-secrets-manager', "auth type 'secret'", error)
  }
}
