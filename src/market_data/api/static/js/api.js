// The JSON API, and the API token: kept in this module's memory only (never stored, never in
// a URL); a reload forgets it.
let token = null;

export function setToken(value) {
  token = value && value.trim() ? value.trim() : null;
}

export function hasToken() {
  return token !== null;
}

function url(path, params) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") query.set(k, String(v));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

export async function getJSON(path, params) {
  const response = await fetch(url(path, params), { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// POST an action with the token; resolves to {ok, status, detail}.
export async function postAction(path, params) {
  if (token === null) return { ok: false, status: 0, detail: "no token" };
  const response = await fetch(url(path, params), {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
  });
  let detail = "";
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (_) {
    detail = response.statusText;
  }
  return { ok: response.ok, status: response.status, detail };
}
