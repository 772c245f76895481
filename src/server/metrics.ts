// Prometheus metrics of one server (its own registry, so several servers in one process — tests —
// do not collide): live sandboxes, runs and commands by outcome, failures by limit, start latency,
// guests' network attempts by decision.
import { Counter, Gauge, Histogram, Registry } from "prom-client";

export class ServerMetrics {
  readonly registry = new Registry();
  readonly sandboxesCreated: Counter;
  readonly sandboxesExpired: Counter;
  readonly sandboxesPaused: Counter;
  readonly sandboxesResumed: Counter;
  readonly runs: Counter<"outcome">;
  readonly limitFailures: Counter<"limit">;
  readonly startSeconds: Histogram;
  readonly runSeconds: Histogram;
  readonly commands: Counter<"outcome">;
  readonly httpRequests: Counter<"status">;
  readonly networkRequests: Counter<"decision">;

  constructor(live: () => number, queued: () => number, heavyLive: () => number = () => 0) {
    const registers = [this.registry];
    new Gauge({ name: "agentbox_sandboxes_live", help: "Sandboxes the server holds (running or closed, not yet deleted).", registers, collect() { this.set(live()); } });
    new Gauge({ name: "agentbox_heavy_sandboxes_live", help: "Heavy-tier (and tier auto) sandboxes holding a heavy slot (running).", registers, collect() { this.set(heavyLive()); } });
    new Gauge({ name: "agentbox_create_queue_length", help: "Create requests waiting for a free sandbox slot.", registers, collect() { this.set(queued()); } });
    this.sandboxesCreated = new Counter({ name: "agentbox_sandboxes_created_total", help: "Sandboxes created.", registers });
    this.sandboxesExpired = new Counter({ name: "agentbox_sandboxes_expired_total", help: "Sandboxes killed after their idle timeout.", registers });
    this.sandboxesPaused = new Counter({ name: "agentbox_sandboxes_paused_total", help: "Sandboxes paused (saved, their process ended): idle with idleAction pause, or asked to.", registers });
    this.sandboxesResumed = new Counter({ name: "agentbox_sandboxes_resumed_total", help: "Paused sandboxes brought back (by a request that used them, or asked to).", registers });
    this.runs = new Counter({ name: "agentbox_runs_total", help: "runCode calls by outcome: ok, guest_error (the code raised), limit (a limit stopped it), failed (host error).", labelNames: ["outcome"], registers });
    this.limitFailures = new Counter({ name: "agentbox_run_limit_failures_total", help: "Runs stopped or trimmed by a limit, by limit name.", labelNames: ["limit"], registers });
    this.startSeconds = new Histogram({
      name: "agentbox_sandbox_start_seconds",
      help: "Time from a create request holding its slot to a ready sandbox (incl. waiting for a start turn).",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.runSeconds = new Histogram({ name: "agentbox_run_seconds", help: "Wall time of runCode calls seen by the server.", buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30], registers });
    this.commands = new Counter({ name: "agentbox_commands_total", help: "commands.run calls by outcome: ok (exit 0), nonzero (another exit code), limit (a limit stopped it), failed (host error).", labelNames: ["outcome"], registers });
    this.httpRequests = new Counter({ name: "agentbox_http_requests_total", help: "HTTP requests by status code.", labelNames: ["status"], registers });
    this.networkRequests = new Counter({
      name: "agentbox_network_requests_total",
      help: "Network requests sandboxes' guests attempted (each redirect hop counts), by decision: allowed (sent), denied (by the grant or a cap), error (no connection attempted, e.g. the name did not resolve).",
      labelNames: ["decision"],
      registers,
    });
  }
}
