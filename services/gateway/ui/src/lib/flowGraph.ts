// A flow's modules as a graph (nodes with positions, edges) coloured by the run's
// flow_status. Pure, so it is tested without a browser and stays fast for big flows.

import type { FlowModule, FlowModuleStatus, FlowStatus, FlowValue } from "./types";

export type StepState = "waiting" | "running" | "suspended" | "success" | "failure" | "skipped";

export interface GraphNode {
  id: string;
  label: string;
  /** The module's type: rawscript, script, flow, forloopflow, branchone, ... */
  kind: string;
  state: StepState;
  /** Loop progress, branch taken, approvals. */
  detail?: string;
  /** The step's job (in its flow, or in the shown iteration or branch). */
  job?: string;
  /** A loop's iterations, and which one the steps inside show. */
  iterations?: Iteration[];
  shownIteration?: number;
  x: number;
  y: number;
}

export interface GraphEdge {
  id: string;
  source: string;
  target: string;
  label?: string;
}

export interface FlowGraph {
  nodes: GraphNode[];
  edges: GraphEdge[];
}

export const NODE_WIDTH = 200;
export const NODE_HEIGHT = 54;
const ROW = 90;
const COLUMN = 240;

const STATES: Record<string, StepState> = {
  WaitingForPriorSteps: "waiting",
  WaitingForEvents: "suspended",
  WaitingForExecutor: "running",
  InProgress: "running",
  Success: "success",
  Failure: "failure",
};

export function stepState(status: FlowModuleStatus | undefined): StepState {
  if (!status) return "waiting";
  if (status.skipped) return "skipped";
  return STATES[status.type] ?? "waiting";
}

/** The state inner steps of a container take from it. */
function innerState(container: StepState): StepState {
  if (container === "suspended") return "running";
  return container;
}

function detailOf(module: FlowModule, status: FlowModuleStatus | undefined): string | undefined {
  const type = module.value.type;
  if ((type === "forloopflow" || type === "whileloopflow") && status && status.count != null) {
    return `${status.progress ?? 0}/${status.count} iterations`;
  }
  if (type === "branchone" && status?.branch_chosen) {
    const chosen = status.branch_chosen;
    return chosen.type === "default" ? "default branch taken" : `branch ${chosen.branch + 1} taken`;
  }
  if (module.suspend && status?.type === "WaitingForEvents") return "waiting for approval";
  if (status?.approvers && status.approvers.length > 0) {
    return `approved by ${status.approvers.map((a) => a.approver).join(", ")}`;
  }
  return undefined;
}

/** A loop's iteration (a child flow job) as the picker shows it. */
export interface Iteration {
  job: string;
  state: "running" | "success" | "failure";
}

/** A child flow job (a loop iteration or a branch) whose statuses the graph shows. */
export interface ChildRef {
  job: string;
  /** It ended: its flow_status no longer changes. */
  done: boolean;
}

export interface GraphOptions {
  /** The flow_status of loop iterations and branches (child flow jobs), by job id. */
  children?: ReadonlyMap<string, FlowStatus>;
  /** The iteration shown of each loop, by module id (default: the latest started). */
  selected?: Readonly<Record<string, number>>;
}

interface Placed {
  /** Ids that lead into the sequence / out of it. */
  entry: string | null;
  exits: string[];
  height: number;
  width: number;
}

/** Where a sequence's steps take their states from: a flow_status, or their container. */
type Scope = { byId: Map<string, FlowModuleStatus> } | { inherited: StepState };

function statusScope(status: FlowStatus | null | undefined): Scope {
  return { byId: new Map((status?.modules ?? []).map((m) => [m.id, m])) };
}

/** How iteration (or branch) ended; not known yet: running, unless its container ended. */
function iterationState(success: boolean | null | undefined, container: StepState): Iteration["state"] {
  if (success === true) return "success";
  if (success === false) return "failure";
  return container === "success" || container === "failure" ? container : "running";
}

class Builder {
  nodes: GraphNode[] = [];
  edges: GraphEdge[] = [];
  children: ChildRef[] = [];
  private options: GraphOptions;

  constructor(options: GraphOptions) {
    this.options = options;
  }

  edge(source: string, target: string, label?: string): void {
    this.edges.push({ id: `${source}->${target}`, source, target, label });
  }

  /**
   * The scope of a container's body run by child flow ``job`` (``undefined``: not
   * started): its own flow_status once loaded, else the container's state.
   */
  childScope(job: string | undefined, done: boolean, fallback: StepState): Scope {
    if (!job) return { inherited: fallback };
    this.children.push({ job, done });
    const status = this.options.children?.get(job);
    return status ? statusScope(status) : { inherited: fallback };
  }

  /** Lay out ``modules`` one under the other from (x, y). */
  sequence(modules: FlowModule[], x: number, y: number, scope: Scope): Placed {
    let entry: string | null = null;
    let exits: string[] = [];
    let height = 0;
    let width = COLUMN;
    for (const module of modules) {
      const placed = this.module(module, x, y + height, scope);
      if (entry === null) entry = placed.entry;
      for (const exit of exits) if (placed.entry) this.edge(exit, placed.entry);
      exits = placed.exits;
      height += placed.height;
      width = Math.max(width, placed.width);
    }
    return { entry, exits, height, width };
  }

  module(module: FlowModule, x: number, y: number, scope: Scope): Placed {
    const status = "byId" in scope ? scope.byId.get(module.id) : undefined;
    const state = "inherited" in scope ? scope.inherited : stepState(status);
    const type = module.value.type;
    const node: GraphNode = {
      id: module.id,
      label: module.summary ? `${module.id}: ${module.summary}` : module.id,
      kind: type,
      state,
      detail: "byId" in scope ? detailOf(module, status) : undefined,
      job: status?.job,
      x,
      y,
    };
    this.nodes.push(node);
    if (type === "forloopflow" || type === "whileloopflow") {
      const jobs = status?.flow_jobs ?? [];
      let bodyScope: Scope = { inherited: innerState(state) };
      if (jobs.length > 0) {
        const wanted = this.options.selected?.[module.id];
        const shown = wanted != null && wanted >= 0 && wanted < jobs.length ? wanted : jobs.length - 1;
        node.iterations = jobs.map((job, i) => ({ job, state: iterationState(status?.flow_jobs_success?.[i], state) }));
        node.shownIteration = shown;
        const iteration = node.iterations[shown];
        bodyScope = this.childScope(iteration.job, iteration.state !== "running", innerState(iteration.state));
      }
      const body = this.sequence(module.value.modules ?? [], x + 40, y + ROW, bodyScope);
      if (body.entry) this.edge(module.id, body.entry, "each");
      return {
        entry: module.id,
        exits: body.exits.length > 0 ? body.exits : [module.id],
        height: ROW + body.height,
        width: 40 + body.width,
      };
    }
    if (type === "branchone" || type === "branchall") {
      const branches = [
        ...(module.value.branches ?? []).map((b, i) => ({
          label: b.summary || (type === "branchone" ? b.expr || `branch ${i + 1}` : `branch ${i + 1}`),
          modules: b.modules,
          index: i,
        })),
      ];
      if (type === "branchone") {
        branches.push({ label: "default", modules: module.value.default ?? [], index: -1 });
      }
      const chosen = status?.branch_chosen;
      const taken = chosen ? (chosen.type === "default" ? -1 : chosen.branch) : null;
      let height = 0;
      let width = 0;
      const exits: string[] = [];
      branches.forEach((branch, column) => {
        let branchScope: Scope = { inherited: innerState(state) };
        if (type === "branchone" && taken !== null) {
          branchScope =
            taken === branch.index
              ? this.childScope(status?.job, state === "success" || state === "failure", innerState(state))
              : { inherited: "skipped" };
        } else if (type === "branchall" && status?.flow_jobs?.[branch.index]) {
          const ended = iterationState(status.flow_jobs_success?.[branch.index], state);
          branchScope = this.childScope(status.flow_jobs[branch.index], ended !== "running", innerState(ended));
        }
        const placed = this.sequence(branch.modules, x + column * COLUMN, y + ROW, branchScope);
        if (placed.entry) {
          this.edge(module.id, placed.entry, branch.label);
          exits.push(...placed.exits);
        } else {
          exits.push(module.id);
        }
        height = Math.max(height, placed.height);
        width += COLUMN;
      });
      return { entry: module.id, exits: [...new Set(exits)], height: ROW + height, width };
    }
    return { entry: module.id, exits: [module.id], height: ROW, width: COLUMN };
  }
}

/**
 * The graph of ``flow`` coloured by ``status`` (``null``: not run, every step waiting).
 * Steps inside loops and branches take their states from the child flow's status in
 * ``options.children`` (the selected iteration of a loop); until it is known, from
 * their container. ``children`` lists the child flow jobs whose statuses it would use.
 */
export function buildFlowGraph(
  flow: FlowValue,
  status?: FlowStatus | null,
  options: GraphOptions = {},
): FlowGraph & { children: ChildRef[] } {
  const builder = new Builder(options);
  builder.sequence(flow.modules ?? [], 0, 0, status ? statusScope(status) : { inherited: "waiting" });
  return { nodes: builder.nodes, edges: builder.edges, children: builder.children };
}

/** Top-level steps waiting for an approval, with their job (what the buttons act on). */
export function suspendedSteps(status: FlowStatus | null | undefined): { id: string; job: string }[] {
  return (status?.modules ?? [])
    .filter((m) => m.type === "WaitingForEvents" && m.job)
    .map((m) => ({ id: m.id, job: m.job! }));
}
