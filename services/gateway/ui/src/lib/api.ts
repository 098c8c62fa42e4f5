// The Gristmill HTTP API as the UI calls it: the token and workspace kept in
// localStorage, JSON in and out, errors carrying the server's message and location.

const TOKEN_KEY = "gristmill.token";
const WORKSPACE_KEY = "gristmill.workspace";

export function getToken(): string | null {
  return localStorage.getItem(TOKEN_KEY);
}

export function setSession(token: string, workspace: string): void {
  localStorage.setItem(TOKEN_KEY, token);
  localStorage.setItem(WORKSPACE_KEY, workspace);
}

export function clearSession(): void {
  localStorage.removeItem(TOKEN_KEY);
}

export function workspace(): string {
  return localStorage.getItem(WORKSPACE_KEY) || "main";
}

/** An error answered by the API: ``{"error": {"code", "message", "location"}}``. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string | undefined;
  readonly location: string | undefined;

  constructor(status: number, message: string, code?: string, location?: string) {
    super(message);
    this.status = status;
    this.code = code;
    this.location = location;
  }
}

type Query = Record<string, string | number | boolean | undefined | null>;

export function withQuery(path: string, query?: Query): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

/** ``/api/w/<workspace>`` + ``path``. */
export function ws(path: string): string {
  return `/api/w/${encodeURIComponent(workspace())}${path}`;
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  /** Send ``body`` as is with this content type (e.g. YAML). */
  contentType?: string;
  query?: Query;
  token?: string;
}

async function request(path: string, options: RequestOptions = {}): Promise<Response> {
  const headers: Record<string, string> = {};
  const token = options.token ?? getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let body: string | undefined;
  if (options.body !== undefined) {
    if (options.contentType) {
      headers["Content-Type"] = options.contentType;
      body = String(options.body);
    } else {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.body);
    }
  }
  const response = await fetch(withQuery(path, options.query), {
    method: options.method ?? (body === undefined ? "GET" : "POST"),
    headers,
    body,
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    let code: string | undefined;
    let location: string | undefined;
    try {
      const payload = await response.json();
      const error = payload?.error ?? payload;
      if (typeof error?.message === "string") message = error.message;
      if (typeof error?.detail === "string") message = error.detail;
      code = error?.code;
      location = error?.location;
    } catch {
      // not JSON: keep the status line
    }
    if (response.status === 401) window.dispatchEvent(new Event("gristmill:unauthorized"));
    throw new ApiError(response.status, message, code, location);
  }
  return response;
}

export async function apiJson<T>(path: string, options?: RequestOptions): Promise<T> {
  const response = await request(path, options);
  const text = await response.text();
  return (text ? JSON.parse(text) : null) as T;
}

export async function apiText(path: string, options?: RequestOptions): Promise<string> {
  const response = await request(path, options);
  return response.text();
}
