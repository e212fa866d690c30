// The page's EventSource: the browser reconnects by itself when the stream ends or
// breaks, sending the id of the last event it got as Last-Event-ID, so the server
// can send exactly the messages that were missed.
"use strict";

const statusEl = document.getElementById("status");
const clockEl = document.getElementById("clock");
const listEl = document.getElementById("messages");
const form = document.getElementById("post");
const input = document.getElementById("text");

function setState(state) {
  statusEl.dataset.state = state;
  statusEl.textContent = state;
}

const source = new EventSource("/events");

source.addEventListener("open", () => {
  statusEl.dataset.connections = String(Number(statusEl.dataset.connections) + 1);
  setState("open");
});

source.addEventListener("error", () => {
  setState(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
});

source.addEventListener("tick", (event) => {
  clockEl.textContent = event.data;
});

// Messages are events without an event name: the default "message" type.
source.addEventListener("message", (event) => {
  const item = document.createElement("li");
  item.dataset.id = event.lastEventId;
  const id = document.createElement("span");
  id.className = "id";
  id.textContent = "#" + event.lastEventId;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = event.data; // text, never HTML
  item.append(id, text);
  listEl.append(item);
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  const response = await fetch("/messages", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ text }),
  });
  if (response.ok) input.value = "";
});
