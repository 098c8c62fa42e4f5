// Follow a job live over the gateway's server-sent events: new log chunks, running
// state, a flow's step statuses, and at the end the completed job.

import { useEffect, useState } from "react";
import { streamUrl, ws } from "./api";
import type { FlowStatus, Job } from "./types";

export interface JobStream {
  logs: string;
  running: boolean;
  completed: boolean;
  flowStatus: FlowStatus | null;
  /** The completed job (its logs are in ``logs``). */
  job: Job | null;
  /** The stream broke and could not come back (e.g. the job was deleted). */
  error: string | null;
}

interface UpdateEvent {
  type: "update";
  running: boolean;
  completed: boolean;
  log_offset: number;
  new_logs?: string;
  flow_status?: FlowStatus | null;
  job?: Job;
}

type StreamEvent = UpdateEvent | { type: "ping" | "timeout" | "not_found" } | { type: "error"; error: string };

const INITIAL: JobStream = { logs: "", running: false, completed: false, flowStatus: null, job: null, error: null };

/** ``jobId`` null: follow nothing. */
export function useJobStream(jobId: string | null): JobStream {
  const [state, setState] = useState<JobStream>(INITIAL);
  useEffect(() => {
    setState(INITIAL);
    if (!jobId) return;
    let offset = 0;
    let source: EventSource | null = null;
    let closed = false;
    let retry: ReturnType<typeof setTimeout> | undefined;

    const open = () => {
      source = new EventSource(
        streamUrl(ws(`/jobs_u/getupdate_sse/${jobId}`), { log_offset: offset, poll_delay_ms: 250 }),
      );
      source.onmessage = (message) => {
        const event = JSON.parse(message.data) as StreamEvent;
        if (event.type === "update") {
          const chunk = event.new_logs ?? "";
          offset = event.log_offset;
          setState((previous) => ({
            logs: previous.logs + chunk,
            running: event.running,
            completed: event.completed,
            flowStatus: event.flow_status ?? event.job?.flow_status ?? previous.flowStatus,
            job: event.job ?? previous.job,
            error: null,
          }));
          if (event.completed) stop();
        } else if (event.type === "timeout") {
          source?.close();
          if (!closed) open();
        } else if (event.type === "not_found") {
          setState((previous) => ({ ...previous, error: "the job no longer exists" }));
          stop();
        } else if (event.type === "error") {
          source?.close();
          if (!closed) retry = setTimeout(open, 1000);
        }
      };
      // The browser reconnects by itself after network errors (Last-Event-ID = offset).
    };
    const stop = () => {
      closed = true;
      source?.close();
      if (retry) clearTimeout(retry);
    };
    open();
    return stop;
  }, [jobId]);
  return state;
}
