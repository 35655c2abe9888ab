// compose.yaml and deploy/kubernetes/ parsed (no Docker daemon or cluster here): the facts that
// must agree across files do, i.e. ports, probe paths, seed names against the headless Service
// and the StatefulSet, replicas against seeds, grace periods against the drain, the variables
// against the binary's, and the user against the Dockerfile's.
import { describe, expect, test } from 'bun:test'
import { existsSync, mkdtempSync, rmSync, cpSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { DEFAULTS } from '../../src/config'
import { DRAIN_SECONDS, ROOT, dockerfile, text, unknownEnv, yamlDocs } from './files'

const K8S = 'deploy/kubernetes'
const dockerUser = Number(dockerfile().findLast((i) => i.keyword === 'USER')!.args.split(':')[0])

function seconds(duration: string): number {
  const m = /^(\d+)(s|m)$/.exec(duration)
  if (!m) throw new Error(`unexpected duration ${duration}`)
  return Number(m[1]) * (m[2] === 'm' ? 60 : 1)
}

describe('compose.yaml', () => {
  const compose = yamlDocs('compose.yaml')[0]
  const services = Object.entries<any>(compose.services)

  test('three nodes, each advertising its own service name, seeded with all three by name', () => {
    expect(services.map(([name]) => name)).toEqual(['chat-1', 'chat-2', 'chat-3'])
    for (const [name, service] of services) {
      const env = service.environment
      expect(env.CLUSTER_HOST).toBe(name)
      const port = env.CLUSTER_PORT ?? String(DEFAULTS.clusterPort)
      expect(env.SEED_NODES).toBe(services.map(([seed]) => `${seed}:${port}`).join(','))
      expect(service.networks).toEqual(['chat'])
      expect(unknownEnv(Object.keys(env))).toEqual([])
    }
  })

  test('publishes HTTP on 8081-8083 to each container HTTP port', () => {
    services.forEach(([, service], i) => {
      const httpPort = service.environment.HTTP_PORT ?? String(DEFAULTS.httpPort)
      expect(service.ports).toEqual([`${8081 + i}:${httpPort}`])
    })
  })

  test('gives the drain time before SIGKILL, keeps the image healthcheck and requires a secret', () => {
    for (const [, service] of services) {
      expect(seconds(service.stop_grace_period)).toBeGreaterThanOrEqual(DRAIN_SECONDS)
      expect(service.healthcheck?.disable).not.toBe(true)
      expect(service.build).toBe('.')
      // ${VAR:?message}: Compose refuses to start without it instead of running with none.
      expect(service.environment.CLUSTER_SECRET).toMatch(/^\$\{CLUSTER_SECRET:\?.+\}$/)
    }
  })
})

describe('deploy/kubernetes', () => {
  const kustomization = yamlDocs(`${K8S}/kustomization.yaml`)[0]
  const docs = (kustomization.resources as string[]).flatMap((file) => yamlDocs(`${K8S}/${file}`))
  const byKind = (kind: string) => docs.filter((d) => d.kind === kind)
  const sts = byKind('StatefulSet')[0]
  const pod = sts.spec.template.spec
  const container = pod.containers[0]
  const env = Object.fromEntries(container.env.map((e: any) => [e.name, e]))
  const port = (name: string) => container.ports.find((p: any) => p.name === name).containerPort
  const headless = byKind('Service').find((s) => s.metadata.name === sts.spec.serviceName)
  const podLabels = sts.spec.template.metadata.labels

  test('seeds are the StatefulSet pods by their names under the headless Service, one per replica', () => {
    expect(headless.spec.clusterIP).toBe('None')
    expect(headless.spec.publishNotReadyAddresses).toBe(true) // else no node could ever join
    const seeds = env.SEED_NODES.value.split(',')
    expect(seeds.length).toBe(sts.spec.replicas)
    expect(seeds).toEqual(seeds.map((_: string, i: number) => `${sts.metadata.name}-${i}.${headless.metadata.name}:${port('cluster')}`))
  })

  test("each pod advertises its own stable name, spelled as in the seeds", () => {
    expect(env.POD_NAME.valueFrom.fieldRef.fieldPath).toBe('metadata.name')
    expect(env.CLUSTER_HOST.value).toBe(`$(POD_NAME).${headless.metadata.name}`)
    expect(container.env.findIndex((e: any) => e.name === 'POD_NAME')).toBeLessThan(container.env.findIndex((e: any) => e.name === 'CLUSTER_HOST'))
  })

  test('ports agree between the variables, the container and the Services', () => {
    expect(String(port('cluster'))).toBe(env.CLUSTER_PORT.value)
    expect(String(port('http'))).toBe(env.HTTP_PORT.value)
    expect(headless.spec.ports.map((p: any) => p.targetPort)).toEqual(['cluster'])
    const client = byKind('Service').find((s) => s !== headless)
    expect(client.spec.ports.map((p: any) => p.targetPort)).toEqual(['http'])
    for (const service of byKind('Service')) expect(podLabels).toMatchObject(service.spec.selector)
  })

  test('readiness on /readyz, liveness and startup on /healthz, all on the HTTP port', () => {
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'http' })
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'http' })
    expect(container.startupProbe.httpGet).toEqual({ path: '/healthz', port: 'http' })
  })

  test('the grace period covers preStop and the drain; the command execs the node (PID 1 gets SIGTERM)', () => {
    const preStop = container.lifecycle.preStop.exec.command
    expect(preStop[0]).toBe('sleep')
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(Number(preStop[1]) + DRAIN_SECONDS)
    expect(container.command.slice(0, 2)).toEqual(['/bin/sh', '-c'])
    expect(container.command[2]).toMatch(/^exec websocket-cluster "\$@"$/m)
  })

  test('only variables the binary reads; the secret file is mounted from the generated Secret', () => {
    expect(unknownEnv(Object.keys(env))).toEqual([])
    const mount = container.volumeMounts.find((m: any) => m.mountPath === dirname(env.CLUSTER_SECRET_FILE.value))
    const volume = pod.volumes.find((v: any) => v.name === mount.name)
    const generated = kustomization.secretGenerator.find((g: any) => g.name === volume.secret.secretName)
    const key = env.CLUSTER_SECRET_FILE.value.split('/').pop()
    expect(generated.files).toContain(`${key}=cluster-secret`)
    expect(text('.gitignore')).toContain(`${K8S}/cluster-secret`)
  })

  test('non-root (the Dockerfile user), read-only root file system, no privilege escalation', () => {
    expect(pod.securityContext.runAsNonRoot).toBe(true)
    expect(pod.securityContext.runAsUser).toBe(dockerUser)
    expect(pod.securityContext.fsGroup).toBe(dockerUser) // group of the secret file it reads
    expect(container.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } })
    for (const kind of ['requests', 'limits']) expect(Object.keys(container.resources[kind]).sort()).toEqual(['cpu', 'memory'])
  })

  test('a PodDisruptionBudget lets one pod go at a time', () => {
    const pdb = byKind('PodDisruptionBudget')[0]
    expect(pdb.spec.maxUnavailable).toBe(1)
    expect(podLabels).toMatchObject(pdb.spec.selector.matchLabels)
    expect(sts.spec.selector.matchLabels).toEqual(podLabels)
  })

  // kubectl builds the kustomization offline: catches what a YAML parse does not (bad fields
  // for kustomize, a resource file missing, the generator's syntax).
  const kubectl = Bun.which('kubectl')
  if (!kubectl) console.warn('skipping the kustomize render: no kubectl on PATH')
  test.skipIf(!kubectl)('kubectl kustomize renders it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'wsc-kustomize-'))
    try {
      cpSync(join(ROOT, K8S), dir, { recursive: true })
      if (!existsSync(join(dir, 'cluster-secret'))) writeFileSync(join(dir, 'cluster-secret'), 'x'.repeat(32))
      const run = Bun.spawnSync([kubectl!, 'kustomize', dir], { stdout: 'pipe', stderr: 'pipe' })
      expect(run.stderr.toString()).toBe('')
      const kinds = (Bun.YAML.parse(run.stdout.toString()) as any[]).map((d) => d.kind).sort()
      expect(kinds).toEqual(['PodDisruptionBudget', 'Secret', 'Service', 'Service', 'StatefulSet'])
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
