// Served as text/javascript (never text/plain, whatever the OS registry says), and as
// app.js.br and app.js.gz (Content-Encoding: br or gzip) to clients that accept them.
document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("script-status");
  if (status) {
    status.textContent = "The script ran.";
  }
});
