// The Kubernetes manifests under deploy/kubernetes, checked offline: every YAML document parses and
// validates against the Kubernetes OpenAPI schemas (kubernetes-models' compiled validators), the
// fields of the objects people most often mistype are known fields (the schemas themselves allow
// unknown ones), and the objects agree with each other and with `agentbox serve` (selectors, the
// StatefulSets' governing Services, probes, ports, flags, volumes, config references). Negative
// cases prove that the validator and each cross-check really reject what they should.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";
import { Deployment, StatefulSet } from "kubernetes-models/apps/v1";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { RuntimeClass } from "kubernetes-models/node.k8s.io/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service, ServiceAccount } from "kubernetes-models/v1";
import { parseAllDocuments } from "yaml";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const K8S = path.join(ROOT, "deploy/kubernetes");
/** Files here need CRDs (prometheus-operator) that kubernetes-models has no models for. */
const OPTIONAL = path.join(K8S, "optional");
const CRD_KINDS = new Set(["monitoring.coreos.com/v1/ServiceMonitor"]);
/** The kustomizations a user applies (`kubectl apply -k`). */
const ENTRY_POINTS = [K8S, path.join(K8S, "overlays/nano-only")];
/** Cluster-mode flags of `agentbox serve` (docs/CLUSTER.md); the rest come from the CLI's usage text. */
const CLUSTER_FLAGS = ["--cluster", "--node-id", "--advertise", "--state-dir", "--lease-ttl"];
/** The image the serve containers use (kustomize's `images:` renames it). */
const IMAGE = "agentbox";

type Obj = Record<string, unknown>;
interface Manifest {
  file: string;
  obj: Obj;
}
interface Validatable {
  validate(): void;
}

// ---------- small accessors (the manifests are untyped YAML) ----------
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const obj = (v: unknown): Obj => (isObj(v) ? v : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
const labelsOf = (v: unknown): Record<string, string> => Object.fromEntries(Object.entries(obj(v)).filter((e): e is [string, string] => typeof e[1] === "string"));
const kindOf = (o: Obj) => `${str(o.apiVersion) ?? "?"}/${str(o.kind) ?? "?"}`;
const nameOf = (o: Obj) => str(obj(o.metadata).name) ?? "(unnamed)";
const nsOf = (o: Obj) => str(obj(o.metadata).namespace);
const where = (m: Manifest) => `${str(m.obj.kind)}/${nameOf(m.obj)} (${path.relative(ROOT, m.file)})`;
/** Every label of `selector` is on `labels` (a Service or matchLabels selector). */
const selects = (selector: Record<string, string>, labels: Record<string, string>) => Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);

// ---------- schema validation ----------
const model =
  <T>(C: new (data: T) => Validatable) =>
  (o: Obj): Validatable =>
    new C(o as T);
const MODELS: Record<string, (o: Obj) => Validatable> = {
  "v1/Namespace": model(Namespace),
  "v1/ServiceAccount": model(ServiceAccount),
  "v1/Secret": model(Secret),
  "v1/ConfigMap": model(ConfigMap),
  "v1/Service": model(Service),
  "v1/PersistentVolumeClaim": model(PersistentVolumeClaim),
  "apps/v1/StatefulSet": model(StatefulSet),
  "apps/v1/Deployment": model(Deployment),
  "policy/v1/PodDisruptionBudget": model(PodDisruptionBudget),
  "autoscaling/v2/HorizontalPodAutoscaler": model(HorizontalPodAutoscaler),
  "node.k8s.io/v1/RuntimeClass": model(RuntimeClass),
  "networking.k8s.io/v1/NetworkPolicy": model(NetworkPolicy),
};

/** Validate one object against its Kubernetes schema; the error names the object. */
export function validateObject(o: Obj, label = `${str(o.kind)}/${nameOf(o)}`): void {
  const make = MODELS[kindOf(o)];
  if (!make) throw new Error(`${label}: no schema for ${kindOf(o)} (add its kubernetes-models class to MODELS)`);
  try {
    make(o).validate();
  } catch (e) {
    throw new Error(`${label}: ${(e as Error).message}`, { cause: e });
  }
}

// The compiled schemas accept unknown fields, so a typo such as `livenesProbe` would pass them.
// The field names of the most-edited types, read from kubernetes-models' own type declarations.
const MODELS_V1 = path.dirname(fileURLToPath(import.meta.resolve("kubernetes-models/v1")));
const MODELS_APPS = path.dirname(fileURLToPath(import.meta.resolve("kubernetes-models/apps/v1")));
const MODELS_META = path.dirname(fileURLToPath(import.meta.resolve("@kubernetes-models/apimachinery/apis/meta/v1")));
function fieldsOf(dts: string): Set<string> {
  const text = fs.readFileSync(dts, "utf8");
  const body = text.slice(text.indexOf("export interface I"));
  return new Set([...body.matchAll(/^\s{4}"([A-Za-z0-9$]+)"\??:/gm)].map((m) => m[1]!));
}
const FIELDS = {
  meta: fieldsOf(path.join(MODELS_META, "ObjectMeta.d.ts")),
  podSpec: fieldsOf(path.join(MODELS_V1, "PodSpec.d.ts")),
  container: fieldsOf(path.join(MODELS_V1, "Container.d.ts")),
  probe: fieldsOf(path.join(MODELS_V1, "Probe.d.ts")),
  securityContext: fieldsOf(path.join(MODELS_V1, "SecurityContext.d.ts")),
  podSecurityContext: fieldsOf(path.join(MODELS_V1, "PodSecurityContext.d.ts")),
  volumeMount: fieldsOf(path.join(MODELS_V1, "VolumeMount.d.ts")),
  serviceSpec: fieldsOf(path.join(MODELS_V1, "ServiceSpec.d.ts")),
  statefulSetSpec: fieldsOf(path.join(MODELS_APPS, "StatefulSetSpec.d.ts")),
};

/** Unknown field names in the parts of an object that the schemas do not close. */
export function unknownFields(o: Obj): string[] {
  const bad: string[] = [];
  const check = (v: unknown, known: Set<string>, at: string) => {
    for (const k of Object.keys(obj(v))) if (!known.has(k)) bad.push(`${at}.${k}`);
  };
  check(o.metadata, FIELDS.meta, "metadata");
  if (o.kind === "Service") check(o.spec, FIELDS.serviceSpec, "spec");
  if (o.kind === "StatefulSet") check(o.spec, FIELDS.statefulSetSpec, "spec");
  const tpl = obj(obj(o.spec).template);
  if (o.kind === "StatefulSet" || o.kind === "Deployment") {
    check(tpl.metadata, FIELDS.meta, "spec.template.metadata");
    const pod = obj(tpl.spec);
    check(pod, FIELDS.podSpec, "spec.template.spec");
    check(pod.securityContext, FIELDS.podSecurityContext, "spec.template.spec.securityContext");
    for (const list of ["initContainers", "containers"]) {
      arr(pod[list]).forEach((c, i) => {
        const at = `spec.template.spec.${list}[${i}]`;
        check(c, FIELDS.container, at);
        check(obj(c).securityContext, FIELDS.securityContext, `${at}.securityContext`);
        for (const p of ["livenessProbe", "readinessProbe", "startupProbe"]) if (obj(c)[p] !== undefined) check(obj(c)[p], FIELDS.probe, `${at}.${p}`);
        arr(obj(c).volumeMounts).forEach((m, j) => check(m, FIELDS.volumeMount, `${at}.volumeMounts[${j}]`));
      });
    }
  }
  return bad;
}

// ---------- loading ----------
function yamlFiles(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((d) => (d.isDirectory() ? yamlFiles(path.join(dir, d.name)) : /\.ya?ml$/.test(d.name) ? [path.join(dir, d.name)] : []))
    .sort();
}

function parseFile(file: string): Obj[] {
  const docs = parseAllDocuments(fs.readFileSync(file, "utf8"));
  const out: Obj[] = [];
  for (const [i, d] of docs.entries()) {
    if (d.errors.length) throw new Error(`${path.relative(ROOT, file)} document ${i + 1}: ${d.errors.map((e) => e.message).join("; ")}`);
    const v: unknown = d.toJS();
    if (v === null || v === undefined) continue;
    if (!isObj(v)) throw new Error(`${path.relative(ROOT, file)} document ${i + 1}: not a mapping`);
    out.push(v);
  }
  return out;
}

const FILES = yamlFiles(K8S);
const ALL: Manifest[] = FILES.flatMap((file) => parseFile(file).map((o) => ({ file, obj: o })));
const KUSTOMIZATIONS = ALL.filter((m) => m.obj.kind === "Kustomization");
const OBJECTS = ALL.filter((m) => m.obj.kind !== "Kustomization");
const DEFAULT_SET = OBJECTS.filter((m) => !m.file.startsWith(OPTIONAL + path.sep));

// ---------- what `agentbox serve` accepts ----------
/** The serve flags listed in src/cli/main.ts's usage text, plus the cluster flags. */
function serveFlags(): Set<string> {
  const src = fs.readFileSync(path.join(ROOT, "src/cli/main.ts"), "utf8");
  const start = src.indexOf("serve options:");
  const end = src.indexOf("exit codes:", start);
  assert.ok(start > 0 && end > start, "src/cli/main.ts: no `serve options:` section in USAGE");
  const listed = [...src.slice(start, end).matchAll(/^ {2}(--[a-z][a-z-]*)/gm)].map((m) => m[1]!);
  assert.ok(listed.includes("--host") && listed.includes("--state-dir"), `serve options parsed wrongly: ${listed.join(" ")}`);
  return new Set([...listed, ...CLUSTER_FLAGS]);
}

/** `--flag value` / `--flag=value` pairs of an args list. */
function flagsOf(args: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith("--")) continue;
    const eq = a.indexOf("=");
    const [flag, value] = eq > 0 ? [a.slice(0, eq), a.slice(eq + 1)] : [a, args[i + 1] !== undefined && !args[i + 1]!.startsWith("--") ? args[++i]! : ""];
    out.set(flag, [...(out.get(flag) ?? []), value]);
  }
  return out;
}

// ---------- cross-references ----------
interface Workload {
  m: Manifest;
  podLabels: Record<string, string>;
  pod: Obj;
  containers: Obj[];
}
const workloadsOf = (set: Manifest[]): Workload[] =>
  set
    .filter((m) => m.obj.kind === "StatefulSet" || m.obj.kind === "Deployment")
    .map((m) => {
      const tpl = obj(obj(m.obj.spec).template);
      const pod = obj(tpl.spec);
      return { m, podLabels: labelsOf(obj(tpl.metadata).labels), pod, containers: [...arr(pod.initContainers), ...arr(pod.containers)].map(obj) };
    });
const find = (set: Manifest[], kind: string, name: string, ns?: string) => set.find((m) => m.obj.kind === kind && nameOf(m.obj) === name && (ns === undefined || nsOf(m.obj) === ns));
const isServe = (c: Obj) => str(c.image)?.split(":")[0] === IMAGE && c.command === undefined;
const portMatches = (port: unknown, ports: Obj[]) => ports.some((p) => p.name === port || p.containerPort === port);

/** Every broken reference among a set of objects (empty: all consistent). */
export function crossReferenceProblems(set: Manifest[], allowedFlags: Set<string>): string[] {
  const problems: string[] = [];
  const say = (m: Manifest, msg: string) => problems.push(`${where(m)}: ${msg}`);
  const workloads = workloadsOf(set);

  for (const w of workloads) {
    const spec = obj(w.m.obj.spec);
    const ns = nsOf(w.m.obj);
    const match = labelsOf(obj(spec.selector).matchLabels);
    if (!selects(match, w.podLabels)) say(w.m, `selector ${JSON.stringify(match)} does not match the pod labels ${JSON.stringify(w.podLabels)}`);

    if (w.m.obj.kind === "StatefulSet") {
      const svcName = str(spec.serviceName) ?? "";
      const svc = find(set, "Service", svcName, ns);
      if (!svc) say(w.m, `serviceName ${JSON.stringify(svcName)}: no such Service`);
      else {
        if (obj(svc.obj.spec).clusterIP !== "None") say(w.m, `serviceName ${svcName} is not a headless Service (clusterIP: None)`);
        if (!selects(labelsOf(obj(svc.obj.spec).selector), w.podLabels)) say(w.m, `its headless Service ${svcName} does not select its pods`);
      }
    }

    const rc = str(w.pod.runtimeClassName);
    if (rc !== undefined && !find(set, "RuntimeClass", rc)) say(w.m, `runtimeClassName ${rc}: no such RuntimeClass`);
    const sa = str(w.pod.serviceAccountName);
    if (sa !== undefined && !find(set, "ServiceAccount", sa, ns)) say(w.m, `serviceAccountName ${sa}: no such ServiceAccount`);

    const volumes = new Map(arr(w.pod.volumes).map((v) => [str(obj(v).name) ?? "", obj(v)]));
    for (const [name, v] of volumes) {
      const claim = str(obj(v.persistentVolumeClaim).claimName);
      if (claim !== undefined && !find(set, "PersistentVolumeClaim", claim, ns)) say(w.m, `volume ${name}: no PersistentVolumeClaim ${claim}`);
      const secret = str(obj(v.secret).secretName);
      if (secret !== undefined && !find(set, "Secret", secret, ns)) say(w.m, `volume ${name}: no Secret ${secret}`);
      const cm = str(obj(v.configMap).name);
      if (cm !== undefined && !find(set, "ConfigMap", cm, ns)) say(w.m, `volume ${name}: no ConfigMap ${cm}`);
    }

    for (const c of w.containers) {
      const cname = str(c.name) ?? "?";
      const ports = arr(c.ports).map(obj);
      const mounts = arr(c.volumeMounts).map(obj);
      for (const vm of mounts) if (!volumes.has(str(vm.name) ?? "")) say(w.m, `container ${cname}: volumeMount ${String(vm.name)} names no volume`);
      const env = new Map(arr(c.env).map((e) => [str(obj(e).name) ?? "", obj(e)]));
      for (const e of env.values()) {
        const ref = obj(obj(e.valueFrom).configMapKeyRef);
        if (ref.name !== undefined) {
          const cm = find(set, "ConfigMap", str(ref.name) ?? "", ns);
          if (!cm) say(w.m, `env ${String(e.name)}: no ConfigMap ${String(ref.name)}`);
          else if (!Object.hasOwn(obj(cm.obj.data), str(ref.key) ?? "")) say(w.m, `env ${String(e.name)}: ConfigMap ${String(ref.name)} has no key ${String(ref.key)}`);
        }
      }
      for (const p of ["livenessProbe", "readinessProbe", "startupProbe"]) {
        const probe = obj(c[p]);
        if (c[p] === undefined) continue;
        const get = obj(probe.httpGet);
        if (get.path !== "/healthz") say(w.m, `container ${cname}: ${p} path ${String(get.path)} is not /healthz`);
        if (!portMatches(get.port, ports)) say(w.m, `container ${cname}: ${p} port ${String(get.port)} is none of the container's ports`);
      }
      if (!isServe(c)) continue;

      // The `agentbox serve` container.
      for (const p of ["livenessProbe", "readinessProbe"]) if (c[p] === undefined) say(w.m, `container ${cname}: no ${p}`);
      const args = arr(c.args).map((a) => String(a));
      const flags = flagsOf(args);
      for (const f of flags.keys()) if (!allowedFlags.has(f)) say(w.m, `container ${cname}: ${f} is not an \`agentbox serve\` flag`);
      for (const f of ["--cluster", "--state-dir", "--node-id", "--advertise", "--keys"]) if (!flags.has(f)) say(w.m, `container ${cname}: args lack ${f}`);
      for (const ref of args.flatMap((a) => [...a.matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)].map((m) => m[1]!))) {
        if (!env.has(ref)) say(w.m, `container ${cname}: args use $(${ref}), which its env does not define`);
      }
      const podName = obj(obj(env.get("POD_NAME")?.valueFrom).fieldRef).fieldPath;
      if (podName !== "metadata.name") say(w.m, `container ${cname}: POD_NAME is not the downward API's metadata.name`);
      if (flags.get("--node-id")?.[0] !== "$(POD_NAME)") say(w.m, `container ${cname}: --node-id is not $(POD_NAME)`);
      const advertise = flags.get("--advertise")?.[0] ?? "";
      const port = flags.get("--port")?.[0] ?? "8787";
      if (w.m.obj.kind === "StatefulSet" && !advertise.startsWith(`http://$(POD_NAME).${str(spec.serviceName)}.`)) say(w.m, `container ${cname}: --advertise ${advertise} is not the pod's name under its headless Service`);
      if (!advertise.endsWith(`:${port}`)) say(w.m, `container ${cname}: --advertise ${advertise} is not on --port ${port}`);
      if (!ports.some((p) => String(p.containerPort) === port)) say(w.m, `container ${cname}: --port ${port} is not a containerPort`);
      const mountOf = (dir: string | undefined) => mounts.find((vm) => dir !== undefined && (dir === vm.mountPath || dir.startsWith(`${String(vm.mountPath)}/`)));
      const state = mountOf(flags.get("--state-dir")?.[0]);
      const stateVol = volumes.get(str(state?.name) ?? "");
      const claim = find(set, "PersistentVolumeClaim", str(obj(stateVol?.persistentVolumeClaim).claimName) ?? "", ns);
      if (!claim) say(w.m, `container ${cname}: --state-dir is not on a mounted PersistentVolumeClaim`);
      else if (!arr(obj(claim.obj.spec).accessModes).includes("ReadWriteMany")) say(w.m, `container ${cname}: the --state-dir claim ${nameOf(claim.obj)} is not ReadWriteMany`);
      const keys = mountOf(flags.get("--keys")?.[0]);
      if (!keys || !volumes.get(str(keys.name) ?? "")?.secret) say(w.m, `container ${cname}: --keys is not in a mounted Secret`);
      const cacheDir = str(env.get("AGENTBOX_CACHE_DIR")?.value);
      const cache = mounts.find((vm) => vm.mountPath === cacheDir);
      if (!cache || !volumes.get(str(cache.name) ?? "")?.emptyDir) say(w.m, `container ${cname}: AGENTBOX_CACHE_DIR is not an emptyDir mount`);
      const grace = Number(w.pod.terminationGracePeriodSeconds ?? 30);
      if (grace < 60) say(w.m, `terminationGracePeriodSeconds ${grace}: pausing sandboxes on SIGTERM needs more`);
    }
  }

  for (const m of set.filter((x) => x.obj.kind === "Service")) {
    const spec = obj(m.obj.spec);
    const sel = labelsOf(spec.selector);
    const targets = workloads.filter((w) => nsOf(w.m.obj) === nsOf(m.obj) && selects(sel, w.podLabels));
    if (targets.length === 0) {
      say(m, `selector ${JSON.stringify(sel)} matches no workload's pods`);
      continue;
    }
    for (const p of arr(spec.ports).map(obj)) {
      const target = p.targetPort ?? p.port;
      for (const w of targets) {
        const ports = w.containers.filter((c) => c.command === undefined || isServe(c)).flatMap((c) => arr(c.ports).map(obj));
        if (!portMatches(target, ports)) say(m, `port ${String(p.name)}: targetPort ${String(target)} is not a port of ${where(w.m)}`);
      }
    }
  }

  for (const m of set.filter((x) => x.obj.kind === "PodDisruptionBudget")) {
    const sel = labelsOf(obj(obj(m.obj.spec).selector).matchLabels);
    if (!workloads.some((w) => selects(sel, w.podLabels))) say(m, `selector ${JSON.stringify(sel)} matches no workload's pods`);
  }
  for (const m of set.filter((x) => x.obj.kind === "HorizontalPodAutoscaler")) {
    const ref = obj(obj(m.obj.spec).scaleTargetRef);
    if (!find(set, str(ref.kind) ?? "", str(ref.name) ?? "", nsOf(m.obj))) say(m, `scaleTargetRef ${String(ref.kind)}/${String(ref.name)}: no such object`);
  }
  return problems;
}

/** The objects one kustomization pulls in (its resources, directories recursively). */
function resolveKustomization(dir: string, seen = new Set<string>()): Manifest[] {
  const k = KUSTOMIZATIONS.find((m) => path.dirname(m.file) === dir);
  assert.ok(k, `${path.relative(ROOT, dir)}: no kustomization.yaml`);
  const out: Manifest[] = [];
  for (const r of arr(k.obj.resources).map(String)) {
    const p = path.resolve(dir, r);
    assert.ok(fs.existsSync(p), `${path.relative(ROOT, k.file)}: resource ${r} does not exist`);
    if (seen.has(p)) throw new Error(`${path.relative(ROOT, k.file)}: ${r} is included twice`);
    seen.add(p);
    out.push(...(fs.statSync(p).isDirectory() ? resolveKustomization(p, seen) : OBJECTS.filter((m) => m.file === p)));
  }
  return out;
}

// ---------- the tests ----------
describe("deploy/kubernetes manifests", () => {
  it("parse, and there is something to check", () => {
    assert.ok(FILES.length >= 10, `only ${FILES.length} YAML files under deploy/kubernetes`);
    for (const kind of ["Namespace", "ServiceAccount", "Secret", "ConfigMap", "StatefulSet", "Service", "PersistentVolumeClaim", "PodDisruptionBudget", "HorizontalPodAutoscaler", "RuntimeClass"]) {
      assert.ok(
        DEFAULT_SET.some((m) => m.obj.kind === kind),
        `no ${kind} among the manifests`,
      );
    }
  });

  it("validate against the Kubernetes schemas (kubernetes-models)", () => {
    const errors: string[] = [];
    for (const m of OBJECTS) {
      if (m.file.startsWith(OPTIONAL + path.sep) && CRD_KINDS.has(kindOf(m.obj))) continue; // needs CRDs: no model offline
      try {
        validateObject(m.obj, where(m));
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
    assert.deepEqual(errors, []);
  });

  it("use only known field names where the schemas allow any", () => {
    const bad = OBJECTS.flatMap((m) => unknownFields(m.obj).map((f) => `${where(m)}: unknown field ${f}`));
    assert.deepEqual(bad, []);
  });

  it("agree with each other and with `agentbox serve`, for every kustomization a user applies", () => {
    const flags = serveFlags();
    for (const dir of ENTRY_POINTS) {
      const set = resolveKustomization(dir);
      assert.ok(set.some((m) => m.obj.kind === "StatefulSet"), `${path.relative(ROOT, dir)}: no StatefulSet`);
      assert.deepEqual(crossReferenceProblems(set, flags), [], path.relative(ROOT, dir));
    }
    // Both variants together (the "mixed" cluster: base + heavy + nano).
    assert.deepEqual(crossReferenceProblems(DEFAULT_SET, flags), [], "base + heavy + nano");
  });

  it("every manifest outside optional/ is reachable from a kustomization", () => {
    const reached = new Set([...resolveKustomization(K8S), ...resolveKustomization(path.join(K8S, "overlays/nano-only")), ...resolveKustomization(path.join(K8S, "nano"))].map((m) => m.file));
    const orphans = [...new Set(DEFAULT_SET.map((m) => m.file))].filter((f) => !reached.has(f)).map((f) => path.relative(ROOT, f));
    assert.deepEqual(orphans, []);
  });

  it("the heavy variant is privileged and the nano variant holds no privilege at all", () => {
    const sts = (name: string) => workloadsOf(DEFAULT_SET).find((w) => nameOf(w.m.obj) === name);
    const heavy = sts("agentbox-heavy");
    const nano = sts("agentbox-nano");
    assert.ok(heavy && nano);
    const serve = (w: Workload) => w.containers.find(isServe)!;
    assert.equal(obj(serve(heavy).securityContext).privileged, true);
    const sc = obj(serve(nano).securityContext);
    assert.equal(sc.privileged, undefined);
    assert.equal(sc.allowPrivilegeEscalation, false);
    assert.equal(sc.readOnlyRootFilesystem, true);
    assert.deepEqual(obj(sc.capabilities).drop, ["ALL"]);
    assert.equal(obj(nano.pod.securityContext).runAsNonRoot, true);
    assert.equal(obj(obj(nano.pod.securityContext).seccompProfile).type, "RuntimeDefault");
    assert.equal(nano.pod.runtimeClassName, "gvisor");
    assert.equal(heavy.pod.runtimeClassName, undefined, "the heavy nodes run runsc themselves: not under gVisor");
    assert.equal(flagsOf(arr(serve(nano).args).map(String)).get("--max-heavy")?.[0], "0");
  });

  it("optional/ holds only what needs CRDs, referencing objects that exist", () => {
    const optional = OBJECTS.filter((m) => m.file.startsWith(OPTIONAL + path.sep));
    const monitors = optional.filter((m) => m.obj.kind === "ServiceMonitor");
    assert.ok(monitors.length > 0);
    for (const m of monitors) {
      const sel = labelsOf(obj(obj(m.obj.spec).selector).matchLabels);
      const svcs = DEFAULT_SET.filter((s) => s.obj.kind === "Service" && selects(sel, labelsOf(obj(s.obj.metadata).labels)));
      assert.equal(svcs.length, 1, `${where(m)}: should select exactly the client Service`);
      for (const e of arr(obj(m.obj.spec).endpoints).map(obj)) {
        assert.ok(arr(obj(svcs[0]!.obj.spec).ports).some((p) => obj(p).name === e.port), `${where(m)}: port ${String(e.port)}`);
        assert.equal(e.path, "/metrics");
        const secret = obj(e.bearerTokenSecret);
        assert.ok(find(optional, "Secret", str(secret.name) ?? ""), `${where(m)}: bearer token Secret ${String(secret.name)}`);
      }
    }
  });

  it("renders with `kubectl kustomize` when kubectl is installed, and the render validates too", (t) => {
    if (spawnSync("kubectl", ["version", "--client"], { stdio: "ignore" }).status !== 0) {
      t.skip("no kubectl on this machine");
      return;
    }
    for (const dir of ENTRY_POINTS) {
      const r = spawnSync("kubectl", ["kustomize", dir], { encoding: "utf8", timeout: 60_000 });
      assert.equal(r.status, 0, `kubectl kustomize ${path.relative(ROOT, dir)}: ${r.stderr}`);
      const rendered = parseAllDocuments(r.stdout).map((d) => d.toJS() as unknown).filter(isObj);
      assert.equal(rendered.length, resolveKustomization(dir).length, path.relative(ROOT, dir));
      for (const o of rendered) validateObject(o);
      for (const w of workloadsOf(rendered.map((o) => ({ file: dir, obj: o })))) {
        for (const c of w.containers) assert.match(str(c.image) ?? "", /^registry\.example\.com\/agentbox:/, `${nameOf(w.m.obj)}: image not renamed`);
      }
    }
  });
});

describe("the checks themselves reject broken manifests", () => {
  const heavy = DEFAULT_SET.find((m) => m.obj.kind === "StatefulSet" && nameOf(m.obj) === "agentbox-heavy")!;
  const copy = (): Obj => structuredClone(heavy.obj);

  it("schema: a StatefulSet whose replicas is a string", () => {
    const o = copy();
    obj(o.spec).replicas = "3";
    assert.throws(() => validateObject(o), /StatefulSet\/agentbox-heavy: .*replicas must be integer/);
    obj(o.spec).replicas = 3;
    assert.doesNotThrow(() => validateObject(o));
  });

  it("schema: a container without a name, a Service port that is a string", () => {
    const o = copy();
    delete obj(arr(obj(obj(obj(o.spec).template).spec).containers)[0]).name;
    assert.throws(() => validateObject(o), /must have required property 'name'|required property name/);
    const svc = structuredClone(DEFAULT_SET.find((m) => m.obj.kind === "Service")!.obj);
    obj(arr(obj(svc.spec).ports)[0]).port = "http";
    assert.throws(() => validateObject(svc), /Service\//);
  });

  it("field names: a mistyped probe", () => {
    const o = copy();
    const c = obj(arr(obj(obj(obj(o.spec).template).spec).containers)[0]);
    c.livenesProbe = c.livenessProbe;
    delete c.livenessProbe;
    assert.deepEqual(unknownFields(o), ["spec.template.spec.containers[0].livenesProbe"]);
  });

  it("cross-references: wrong serviceName, stray flag, bad probe path, missing volume, selector mismatch", () => {
    const flags = serveFlags();
    const others = DEFAULT_SET.filter((m) => m !== heavy);
    const problems = (mutate: (o: Obj) => void) => {
      const o = copy();
      mutate(o);
      return crossReferenceProblems([...others, { file: heavy.file, obj: o }], flags).join("\n");
    };
    const pod = (o: Obj) => obj(obj(obj(o.spec).template).spec);
    const serve = (o: Obj) => obj(arr(pod(o).containers)[0]);
    assert.equal(problems(() => {}), "");
    assert.match(
      problems((o) => (obj(o.spec).serviceName = "agentbox")),
      /not a headless Service/,
    );
    assert.match(
      problems((o) => (serve(o).args = [...arr(serve(o).args), "--bogus-flag", "1"])),
      /--bogus-flag is not an `agentbox serve` flag/,
    );
    assert.match(
      problems((o) => (serve(o).args = arr(serve(o).args).filter((a, i, all) => a !== "--cluster" && all[i - 1] !== "--cluster"))),
      /args lack --cluster/,
    );
    assert.match(
      problems((o) => (obj(obj(serve(o).readinessProbe).httpGet).path = "/health")),
      /readinessProbe path \/health is not \/healthz/,
    );
    assert.match(
      problems((o) => (obj(obj(serve(o).livenessProbe).httpGet).port = 9999)),
      /livenessProbe port 9999/,
    );
    assert.match(
      problems((o) => (pod(o).volumes = arr(pod(o).volumes).filter((v) => obj(v).name !== "cache"))),
      /volumeMount cache names no volume/,
    );
    assert.match(
      problems((o) => (obj(obj(obj(o.spec).template).metadata).labels = { "app.kubernetes.io/name": "other" })),
      /does not match the pod labels/,
    );
  });
});
