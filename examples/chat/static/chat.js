// The chat's browser client: plain JavaScript, no build step, no dependencies.
//
// Everything that comes from users is put on the page with textContent, never
// innerHTML, so a message like "<img onerror=...>" is shown as text, not run.
(function () {
  "use strict";

  var MAX_NICK = 32;
  // Like Python's str.isprintable(): no control, format or separator characters but " ".
  var PRINTABLE = /^(?:[^\p{C}\p{Z}]| )+$/u;
  var FIRST_DELAY = 500; // ms before the first reconnection attempt
  var MAX_DELAY = 10000; // ms, the longest wait between attempts
  var MAX_ITEMS = 500; // messages kept on the page

  function validNick(nick) {
    var length = Array.from(nick).length; // code points, as the server counts
    return length >= 1 && length <= MAX_NICK && PRINTABLE.test(nick);
  }

  function storedNick() {
    try {
      return localStorage.getItem("chat.nick") || "";
    } catch (e) {
      return ""; // storage can be disabled
    }
  }

  function storeNick(nick) {
    try {
      localStorage.setItem("chat.nick", nick);
    } catch (e) {
      /* not remembered, that is all */
    }
  }

  // -- the landing page -------------------------------------------------------------

  function landingPage() {
    var nick = document.getElementById("nick");
    if (!nick.value) nick.value = storedNick();
    document.getElementById("join").addEventListener("submit", function (e) {
      var value = nick.value.trim();
      if (!validNick(value)) {
        e.preventDefault();
        nick.setCustomValidity("1 to 32 visible characters");
        nick.reportValidity();
        return;
      }
      storeNick(value);
    });
    nick.addEventListener("input", function () {
      nick.setCustomValidity("");
    });
  }

  // -- the room page ----------------------------------------------------------------

  function roomPage() {
    var room = document.body.dataset.room;
    var nick = (new URLSearchParams(location.search).get("nick") || storedNick()).trim();
    var back = "../?room=" + encodeURIComponent(room);
    if (!validNick(nick)) {
      location.replace(back); // choose a nickname first
      return;
    }
    storeNick(nick);

    var list = document.getElementById("messages");
    var status = document.getElementById("status");
    var form = document.getElementById("composer");
    var input = document.getElementById("text");
    document.getElementById("me").textContent = nick;
    document.getElementById("change").href = back;

    var socket = null;
    var delay = FIRST_DELAY;
    // The position of the last message shown: sent back as ?since= on reconnection,
    // so that the server replays what was missed meanwhile, once and in order.
    var lastPosition = null;

    function setStatus(state, text) {
      status.dataset.state = state;
      status.textContent = text;
    }

    function socketUrl() {
      var url = new URL("../ws/" + encodeURIComponent(room), location.href);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      url.search = "?nick=" + encodeURIComponent(nick);
      if (lastPosition) url.search += "&since=" + encodeURIComponent(lastPosition);
      return url.href;
    }

    function hue(text) {
      var h = 0;
      for (var i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) % 360;
      return h;
    }

    // Add a line to the list: parts are [className, text] pairs, shown as text only.
    function add(kind, parts) {
      var atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
      var item = document.createElement("li");
      item.className = kind;
      parts.forEach(function (part) {
        var span = document.createElement("span");
        span.className = part[0];
        span.textContent = part[1];
        item.appendChild(span);
      });
      list.appendChild(item);
      while (list.children.length > MAX_ITEMS) list.removeChild(list.firstChild);
      if (atBottom) list.scrollTop = list.scrollHeight;
      return item;
    }

    function clock(ms) {
      var date = typeof ms === "number" ? new Date(ms) : new Date();
      return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    }

    // One event from the server; a batch holds several, in order.
    function handle(event) {
      if (!event || typeof event !== "object") return;
      if (event.type === "batch") {
        if (Array.isArray(event.events)) event.events.forEach(handle);
        return;
      }
      render(event);
      if (typeof event.position === "string") lastPosition = event.position;
    }

    function render(event) {
      switch (event.type) {
        case "message": {
          var item = add(event.nick === nick ? "message mine" : "message", [
            ["time", clock(event.time)],
            ["nick", String(event.nick)],
            ["text", String(event.text)],
          ]);
          item.querySelector(".nick").style.color = "hsl(" + hue(String(event.nick)) + ", 60%, 38%)";
          break;
        }
        case "join":
          add("notice", [["text", String(event.nick) + " joined"]]);
          break;
        case "leave":
          add("notice", [["text", String(event.nick) + " left"]]);
          break;
        case "notice":
          add("notice system", [["text", String(event.text)]]);
          break;
        case "error":
          add("error", [["text", String(event.text)]]);
          // An undelivered message goes back into the box, to send again.
          if (typeof event.message === "string" && !input.value) input.value = event.message;
          break;
      }
    }

    function connect() {
      setStatus("connecting", "connecting…");
      var ws = new WebSocket(socketUrl());
      socket = ws;
      ws.onopen = function () {
        delay = FIRST_DELAY;
        setStatus("open", "connected");
      };
      ws.onmessage = function (e) {
        var event;
        try {
          event = JSON.parse(e.data);
        } catch (err) {
          return;
        }
        handle(event);
      };
      // Any close, 1012 ("service restart": the server or a worker went away) and
      // 1013 ("try again later") among them: connect again, to whichever server
      // answers, and pick up from lastPosition.
      ws.onclose = function () {
        if (socket !== ws) return;
        socket = null;
        // Back off (with some jitter, so that clients do not all come back at once).
        var wait = delay * (0.75 + Math.random() * 0.5);
        delay = Math.min(delay * 2, MAX_DELAY);
        setStatus("closed", "disconnected, retrying in " + Math.ceil(wait / 1000) + " s");
        setTimeout(connect, wait);
      };
    }

    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var text = input.value;
      if (!text.trim()) return;
      if (!socket || socket.readyState !== WebSocket.OPEN) {
        add("error", [["text", "Not connected: your message was not sent."]]);
        return;
      }
      socket.send(JSON.stringify({ text: text }));
      input.value = "";
      input.focus();
    });

    connect();
  }

  if (document.body.dataset.page === "room") roomPage();
  else if (document.body.dataset.page === "landing") landingPage();
})();
