// Live updates: when the server says the suggestions changed, fetch the list
// again (server-rendered) and swap it in. No build step, no framework.
(function () {
  var list = document.getElementById("suggestions");
  if (!list || !window.EventSource) return;
  var pending = null;
  function refresh() {
    pending = null;
    fetch(list.dataset.fragment, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html !== null) list.innerHTML = html; });
  }
  function soon() { if (!pending) pending = setTimeout(refresh, 200); }
  var source = new EventSource("/stream");
  // A change between rendering the page and opening the stream (or while the
  // stream was down) sent no event: fetch the list once on every (re)connect.
  source.addEventListener("open", soon);
  source.addEventListener("changed", soon);
})();
