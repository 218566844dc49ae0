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
  if (!r.ok && r.status !== 204) throw new Error((await r.json()).detail || r.status);
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
  document.getElementById("reach").hidden = data.email_known;
}

async function refresh() {
  if (!conversation) return;
  show(await call("GET", "/conversations/" + conversation));
  await call("POST", "/conversations/" + conversation + (document.hidden ? "/heartbeat" : "/read"));
}

document.getElementById("send").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = document.getElementById("text");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  const data = conversation
    ? await call("POST", "/conversations/" + conversation + "/messages", {text})
    : await call("POST", "/conversations", {text}, await visitorToken());
  conversation = data.conversation;
  store.setItem(APP + ":c", conversation);
  show(data);
});

document.getElementById("reach").addEventListener("submit", async (e) => {
  e.preventDefault();
  await call("POST", "/conversations/" + conversation + "/email",
             {email: document.getElementById("email").value});
  document.getElementById("reach").hidden = true;
});

refresh();
setInterval(refresh, 3000);
