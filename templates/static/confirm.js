// The confirmation page (templates/widget/confirm.html). If this browser is the one that chatted
// (it holds the visitor token), it says so: following the link here proves both, and the
// chats of this address become this browser's too. Any other browser gets only the one chat.
const APP = document.body.dataset.app;
document.getElementById("visitor").value = window.localStorage.getItem(APP + ":v") || "";
