// Carries ?next= into the login form, so a login returns to the page that asked for it.
const next = new URLSearchParams(location.search).get("next");
if (next && next.startsWith("/") && !next.startsWith("//")) {
  document.getElementById("login-next").value = next;
}
