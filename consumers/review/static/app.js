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
  var source = new EventSource("/stream");
  source.addEventListener("changed", function () {
    if (!pending) pending = setTimeout(refresh, 200);
  });
})();
