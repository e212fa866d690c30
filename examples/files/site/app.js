// Served as text/javascript (never text/plain, whatever the OS registry says), and as
// app.js.gz with Content-Encoding: gzip to clients that accept gzip.
document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("script-status");
  if (status) {
    status.textContent = "The script ran.";
  }
});
