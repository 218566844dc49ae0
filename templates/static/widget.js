// The chat widget (templates/widget/page.html). A file of its own, not inline: the page's
// Content-Security-Policy allows scripts from the gateway's origin only.
const APP = document.body.dataset.app;
const API = "/widget/api/" + encodeURIComponent(APP);
const store = window.localStorage;
// A link from an email carries the conversation's token. It is kept only once the gateway knows
// it: a mistyped or outdated link must not replace the chat this browser already has.
const linked = new URLSearchParams(location.search).get("c");
let conversation = linked || store.getItem(APP + ":c");
// Keep the token out of the history.
if (location.search) history.replaceState(null, "", location.pathname);

const BROKEN_LINK = "This chat link does not work: it may be old, or cut short by your mail " +
  "program. Write your message below to start a new chat.";
const CHAT_GONE = "This chat can no longer be found. Your message is still below: press Send " +
  "to start a new chat with it.";
const OFFLINE = "We could not reach the server. Check your connection, then try again.";

// What the server said, in words: `detail` is a sentence, or (input the server refused) a list
// of objects whose `msg` says what is wrong with each field.
function readable(body, response) {
  const detail = body && body.detail;
  if (typeof detail === "string" && detail) return sentence(detail);
  if (Array.isArray(detail) && detail.length) {
    return detail.map(d => sentence(String((d && d.msg) || d).replace(/^Value error, /, "")))
      .join(" ");
  }
  if (response.status === 429) return "Too many messages at once. Please wait a minute.";
  return "Something went wrong (error " + response.status + "). Please try again.";
}

function sentence(text) {
  const s = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?]$/.test(s) ? s : s + ".";
}

async function call(method, path, body, visitor) {
  const headers = {"Content-Type": "application/json"};
  if (visitor) headers["Authorization"] = "Bearer " + visitor;
  let r;
  try {
    r = await fetch(API + path, {method, headers, body: body ? JSON.stringify(body) : undefined});
  } catch (offline) {
    throw Object.assign(new Error(OFFLINE), {status: 0});
  }
  if (!r.ok) {
    const answer = await r.json().catch(() => null); // a proxy's error page is not JSON
    const refused = Array.isArray(answer && answer.detail) ? answer.detail : [];
    const inPath = refused.some(d => d && Array.isArray(d.loc) && d.loc[0] === "path");
    throw Object.assign(new Error(readable(answer, r)), {status: r.status, inPath});
  }
  return r.status === 204 ? null : r.json();
}

// 404: no conversation has this token; 422 about the path: the token is not even well-formed
// (cut short). A 422 about the body is the message itself (too long, say).
const unknownChat = error => error.status === 404 || (error.status === 422 && error.inPath);

async function visitorToken(renew) {
  let token = renew ? null : store.getItem(APP + ":v");
  if (!token) {
    token = (await call("POST", "/visitors", {locale: navigator.language})).visitor_token;
    store.setItem(APP + ":v", token);
  }
  return token;
}

async function startConversation(text) {
  try {
    return await call("POST", "/conversations", {text}, await visitorToken(false));
  } catch (error) {
    if (error.status !== 401 && error.status !== 404) throw error;
    // The stored visitor is unknown here (the gateway's data was reset): become a new one.
    return call("POST", "/conversations", {text}, await visitorToken(true));
  }
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

function forget(token) {
  if (store.getItem(APP + ":c") === token) store.removeItem(APP + ":c");
}

async function refresh() {
  if (!conversation) return;
  const asked = conversation;
  let data;
  try {
    data = await call("GET", "/conversations/" + asked);
  } catch (error) {
    if (!unknownChat(error)) return notice(error.message);
    const stored = store.getItem(APP + ":c");
    if (stored && stored !== asked) {
      // Confirming an address (perhaps in another tab) gave the chat a new link, or a broken
      // link was followed in a browser that has a chat of its own: go on with the stored one.
      conversation = stored;
      if (asked === linked) notice(BROKEN_LINK);
      return refresh();
    }
    forget(asked);
    conversation = null;
    return notice(asked === linked ? BROKEN_LINK : CHAT_GONE);
  }
  if (asked !== conversation) return; // a message sent meanwhile started another chat
  store.setItem(APP + ":c", asked);
  show(data);
  call("POST", "/conversations/" + asked + (document.hidden ? "/heartbeat" : "/read"))
    .catch(() => {}); // only tells the team the chat is open; the next refresh tries again
}

document.getElementById("send").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = document.getElementById("text");
  const text = input.value.trim();
  if (!text) return;
  const chat = conversation; // a refresh may change `conversation` while this is on its way
  let data;
  try {
    data = chat
      ? await call("POST", "/conversations/" + chat + "/messages", {text})
      : await startConversation(text);
  } catch (error) {
    // The text stays in the box, whatever went wrong.
    if (chat && unknownChat(error)) {
      forget(chat);
      if (conversation === chat) conversation = null;
      return notice(CHAT_GONE);
    }
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
