"""The page's language switch (English / 中文) and the script that makes the choice hold across reloads.

Gradio's frontend picks its language from ``navigator.language`` when it starts (svelte-i18n's
``getLocaleFromNavigator``); the language chosen in its Settings panel is not stored and is gone after a reload.
So the page carries its own switch (:func:`language_switch`, in the header): a click stores the choice in the
cookie ``tessera_lang`` (:data:`.i18n.COOKIE`, one year, the whole site) and in ``localStorage``, and reloads.
:data:`HEAD_SCRIPT` runs before Gradio starts and makes ``navigator.language`` and ``navigator.languages`` say the
stored language, so that the page's own labels (:mod:`.i18n`) and Gradio's built-in strings come in that language;
in Chinese it also rewords the few fixed English words Gradio writes without a translation (:data:`GRADIO_TEXT_ZH`).
The server reads the same cookie to word its messages (:func:`.i18n.request_language`). Without a stored choice
the browser's language rules, as before.

The script must run before Gradio's own scripts: Gradio's ``head`` option is no good for it (Gradio's frontend adds
that to the page after it has chosen its language), so :class:`HeadScript`, a small ASGI middleware of the app,
writes it into the ``<head>`` of every HTML page the server sends.
"""
from __future__ import annotations

import json
from typing import Any

from .i18n import COOKIE, LANGUAGES

SWITCH_ID = "language-switch"
_NAMES = {"en": "English", "zh-CN": "中文"}   # each language named in itself
_NAVIGATOR = {"en": ["en-US", "en"], "zh-CN": ["zh-CN", "zh"]}  # what navigator.languages says for each

# Gradio's words that no translation reaches (written into its scripts, not looked up): the toasts' titles (the
# message type, capitalised) and the status tracker's "processing |" and "queue: 2/3 |". Each: a regular expression
# matching a whole text node of the page, and its Chinese ($1...: the groups).
GRADIO_TEXT_ZH = (
    (r"^(\s*)Warning(\s*)$", "$1警告$2"),
    (r"^(\s*)Error(\s*)$", "$1错误$2"),
    (r"^(\s*)Info(\s*)$", "$1提示$2"),
    (r"^(\s*)Success(\s*)$", "$1成功$2"),
    (r"^(\s*)processing \|(\s*)$", "$1处理中 |$2"),
    (r"^(\s*)queue: (\d+)/(\d*) \|(\s*)$", "$1排队 $2/$3 |$4"),
)

# Runs in the page's <head>, before Gradio's scripts: the stored choice (cookie, else localStorage, which then
# restores the cookie so that the server sees it too) becomes navigator.language(s). In Chinese, a watcher
# rewrites Gradio's fixed words (GRADIO_TEXT_ZH) as Gradio writes them.
HEAD_SCRIPT = """<script>
(function () {
  var known = %(navigator)s;
  var name = %(cookie)s;
  var rules = %(rules)s.map(function (rule) { return [new RegExp(rule[0]), rule[1]]; });
  try {
    var found = document.cookie.match(new RegExp("(?:^|;\\\\s*)" + name + "=([^;]*)"));
    var chosen = found ? decodeURIComponent(found[1]) : null;
    if (!known[chosen]) {
      try { chosen = window.localStorage.getItem(name); } catch (error) { chosen = null; }
      if (known[chosen]) {
        document.cookie = name + "=" + encodeURIComponent(chosen) + "; path=/; max-age=31536000; SameSite=Lax";
      }
    }
    if (known[chosen]) {
      var languages = known[chosen];
      Object.defineProperty(Navigator.prototype, "language", {configurable: true, get: function () { return languages[0]; }});
      Object.defineProperty(Navigator.prototype, "languages", {configurable: true, get: function () { return languages.slice(); }});
      document.documentElement.setAttribute("lang", chosen);
    }
  } catch (error) { /* a browser that refuses: its own language stays */ }
  if ((navigator.language || "").toLowerCase().indexOf("zh") !== 0) { return; }
  function reword(node) {
    if (node.nodeType !== 3) { return; }
    for (var i = 0; i < rules.length; i++) {
      if (rules[i][0].test(node.data)) { node.data = node.data.replace(rules[i][0], rules[i][1]); return; }
    }
  }
  function rewordAll(root) {
    if (root.nodeType === 3) { reword(root); return; }
    if (root.nodeType !== 1) { return; }
    var walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (var node = walker.nextNode(); node; node = walker.nextNode()) { reword(node); }
  }
  new MutationObserver(function (records) {
    records.forEach(function (record) {
      if (record.type === "characterData") { reword(record.target); }
      record.addedNodes.forEach(rewordAll);
    });
  }).observe(document.documentElement, {childList: true, subtree: true, characterData: true});
})();
</script>""" % {"navigator": json.dumps(_NAVIGATOR), "cookie": json.dumps(COOKIE),
               "rules": json.dumps(GRADIO_TEXT_ZH, ensure_ascii=False)}

# On the switch: mark the language in use, and store a click's choice and reload.
_ON_LOAD = """
const name = %(cookie)s;
const current = (navigator.language || "").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
element.querySelectorAll("button[data-lang]").forEach((button) => {
  const chosen = button.dataset.lang;
  button.setAttribute("aria-pressed", String(chosen === current));
  button.addEventListener("click", () => {
    document.cookie = name + "=" + encodeURIComponent(chosen) + "; path=/; max-age=31536000; SameSite=Lax";
    try { window.localStorage.setItem(name, chosen); } catch (error) { /* the cookie is enough */ }
    if (chosen !== current) { window.location.reload(); }
  });
});
""" % {"cookie": json.dumps(COOKIE)}

SWITCH_CSS = (f"#{SWITCH_ID} .language-switch {{ display: flex; gap: 0.25em; justify-content: flex-end; }} "
              f"#{SWITCH_ID} button {{ padding: 0.15em 0.6em; border: 1px solid var(--border-color-primary); "
              f"border-radius: var(--radius-sm); background: var(--background-fill-secondary); cursor: pointer; }} "
              f"#{SWITCH_ID} button[aria-pressed=true] {{ font-weight: 600; "
              f"background: var(--background-fill-primary); }}")


def switch_html() -> str:
    """The switch's buttons, one per language of :data:`.i18n.LANGUAGES`, each named in its own language."""
    buttons = "".join(f'<button type="button" data-lang="{language}" lang="{language}">{_NAMES[language]}</button>'
                      for language in LANGUAGES)
    return f'<div class="language-switch" role="group" aria-label="Language / 语言">{buttons}</div>'


def language_switch() -> Any:
    """The language switch, for the page's header (a ``gr.HTML``; it sends nothing to the server)."""
    import gradio as gr

    return gr.HTML(switch_html(), js_on_load=_ON_LOAD, elem_id=SWITCH_ID, padding=False)


class HeadScript:
    """ASGI middleware: :data:`HEAD_SCRIPT` written right after ``<head>`` of the HTML pages the app sends.

    Only responses of type ``text/html`` are touched (buffered, then sent with the new length); everything else,
    the queue's event streams and the files included, passes as it comes. It sits inside Gradio's compression,
    so it sees the page uncompressed.
    """

    def __init__(self, app: Any, script: str = HEAD_SCRIPT):
        self.app = app
        self.script = script.encode("utf-8")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] | None = None
        body: list[bytes] = []

        async def rewrite(message: dict[str, Any]) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = {key.lower(): value for key, value in message.get("headers", [])}
                html = headers.get(b"content-type", b"").startswith(b"text/html")
                if not html or b"content-encoding" in headers:
                    start = None
                    await send(message)
                    return
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            page = b"".join(body)
            at = page.find(b"<head>")
            if at != -1:
                page = page[:at + 6] + self.script + page[at + 6:]
            headers = [(key, value) for key, value in start.get("headers", []) if key.lower() != b"content-length"]
            headers.append((b"content-length", str(len(page)).encode("ascii")))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": page if scope["method"] == "GET" else b""})

        await self.app(scope, receive, rewrite)
