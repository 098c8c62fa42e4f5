// Shapes the API answers (the fields the UI reads).

export type JsonSchema = {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  order?: string[];
  items?: JsonSchema;
  enum?: unknown[];
  format?: string;
  default?: unknown;
  description?: string;
  title?: string;
  nullable?: boolean;
  contentEncoding?: string;
  [key: string]: unknown;
};

export interface Job {
  type: "QueuedJob" | "CompletedJob";
  id: string;
  job_kind: string;
  script_path: string | null;
  script_hash: string | null;
  language: string | null;
  args: Record<string, unknown> | null;
  created_by: string;
  created_at: string;
  started_at: string | null;
  parent_job: string | null;
  root_job: string | null;
  flow_step_id: string | null;
  trigger_kind: string;
  trigger: string | null;
  schedule_path: string | null;
  logs: string | null;
  raw_flow: FlowValue | null;
  flow_status: FlowStatus | null;
  canceled: boolean;
  running?: boolean;
  scheduled_for?: string;
  success?: boolean;
  status?: string;
  exit_reason?: string;
  result?: unknown;
  duration_ms?: number;
  completed_at?: string;
  worker: string | null;
  attempt: number;
  mem_peak: number | null;
  tag: string;
}

export interface FlowModuleStatus {
  type: string;
  id: string;
  job?: string;
  count?: number | null;
  progress?: number;
  flow_jobs?: string[];
  flow_jobs_success?: (boolean | null)[];
  branch_chosen?: { type: "default" } | { type: "branch"; branch: number };
  approvers?: { resume_id: number; approver: string }[];
  result?: unknown;
  error?: unknown;
  duration_ms?: number | null;
  skipped?: boolean;
}

export interface FlowStatus {
  step: number;
  phase?: string;
  modules: FlowModuleStatus[];
  failure_module?: FlowModuleStatus;
}

export interface FlowModule {
  id: string;
  summary?: string;
  value: {
    type: string;
    modules?: FlowModule[];
    branches?: { summary?: string; expr?: string; modules: FlowModule[] }[];
    default?: FlowModule[];
    language?: string;
    content?: string;
    path?: string;
    [key: string]: unknown;
  };
  suspend?: Record<string, unknown>;
  [key: string]: unknown;
}

export interface FlowValue {
  modules: FlowModule[];
  failure_module?: FlowModule;
  [key: string]: unknown;
}

export interface Flow {
  path: string;
  summary: string;
  description: string;
  value: FlowValue;
  schema?: JsonSchema | null;
  edited_at?: string;
  edited_by?: string;
}

export interface Script {
  hash: string;
  path: string;
  summary: string;
  description: string;
  content: string;
  language: string;
  schema: JsonSchema | null;
  created_by: string;
  created_at: string;
  parent_hashes: string[];
  archived: boolean;
  lock_error_logs: string | null;
}

export interface Schedule {
  path: string;
  schedule: string;
  timezone: string;
  enabled: boolean;
  script_path: string;
  is_flow: boolean;
  args: Record<string, unknown>;
  summary: string | null;
  next_fire_at: string | null;
  last_fired_at: string | null;
  error: string | null;
}
