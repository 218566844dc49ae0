// The chat widget (templates/widget/page.html). A file of its own, not inline: the page's
// Content-Security-Policy allows scripts from the gateway's origin only.
const APP = document.body.dataset.app;
const API = "/widget/api/" + encodeURIComponent(APP);
const store = window.localStorage;
let conversation = new URLSearchParams(location.search).get("c") || store.getItem(APP + ":c");
if (conversation) store.setItem(APP + ":c", conversation);
// The link from an email carries the conversation's token: keep it out of the history.
if (location.search) history.replaceState(null, "", location.pathname);

async function call(method, path, body, visitor) {
  const headers = {"Content-Type": "application/json"};
  if (visitor) headers["Authorization"] = "Bearer " + visitor;
  const r = await fetch(API + path, {method, headers, body: body ? JSON.stringify(body) : undefined});
  if (!r.ok) {
    const error = new Error((await r.json().catch(() => ({}))).detail || r.statusText);
    error.status = r.status;
    throw error;
  }
  return r.status === 204 ? null : r.json();
}

async function visitorToken() {
  let token = store.getItem(APP + ":v");
  if (!token) {
    token = (await call("POST", "/visitors", {locale: navigator.language})).visitor_token;
    store.setItem(APP + ":v", token);
  }
  return token;
}

function show(data) {
  const log = document.getElementById("log");
  log.replaceChildren(...data.messages.map(m => {
    const div = document.createElement("div");
    div.className = "m " + m.author;
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = m.author_name;
    div.append(who, document.createTextNode(m.text));
    return div;
  }));
  log.scrollTop = log.scrollHeight;
  document.getElementById("reach").hidden = data.email_known || data.email_pending;
  document.getElementById("pending").hidden = !data.email_pending;
}

function notice(text) {
  const box = document.getElementById("notice");
  box.textContent = text || "";
  box.hidden = !text;
}

async function refresh() {
  if (!conversation) return;
  try {
    show(await call("GET", "/conversations/" + conversation));
    await call("POST", "/conversations/" + conversation + (document.hidden ? "/heartbeat" : "/read"));
  } catch (error) {
    if (error.status !== 404) return notice(error.message);
    // Confirming an address (perhaps in another tab) gave the chat a new link; else it is gone.
    const stored = store.getItem(APP + ":c");
    conversation = stored !== conversation ? stored : null;
    if (!conversation) store.removeItem(APP + ":c");
  }
}

document.getElementById("send").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = document.getElementById("text");
  const text = input.value.trim();
  if (!text) return;
  let data;
  try {
    data = conversation
      ? await call("POST", "/conversations/" + conversation + "/messages", {text})
      : await call("POST", "/conversations", {text}, await visitorToken());
  } catch (error) {
    return notice(error.message);
  }
  input.value = "";
  notice("");
  conversation = data.conversation;
  store.setItem(APP + ":c", conversation);
  show(data);
});

document.getElementById("reach").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    await call("POST", "/conversations/" + conversation + "/email",
               {email: document.getElementById("email").value});
  } catch (error) {
    return notice(error.message);
  }
  notice("");
  document.getElementById("reach").hidden = true;
  document.getElementById("pending").hidden = false;
});

refresh();
setInterval(refresh, 3000);
