"""Google Drive's download step: from a share URL to the request that sends the file's bytes.

`https://drive.google.com/uc?id=<id>` redirects to Drive's download host, which sends a small
file directly but answers a file too large for its virus scan with an HTML page ("Google Drive
can't scan this file for viruses ... Download anyway"). The button is a form (since 2024 a GET
form to drive.usercontent.google.com with hidden `id`, `export`, `confirm=t` and `uuid` inputs;
in 2022-23 its action carried the query) or, on older pages, a link `/uc?export=download&
confirm=<token>&id=...` that needs the `download_warning` cookie set with the page. Submitting it
as a GET with the same cookies gives the file, as gdown does (get_url_from_gdrive_confirmation;
tests/test_fetch.py checks that both read the same URL out of each kind of page). A page with
no button carries Drive's refusal (quota exceeded, no access) in `uc-error-subcaption`.
"""

from __future__ import annotations

import html.parser
import http.client
import re
import urllib.error
import urllib.parse
import urllib.request

from ..errors import DownloadError
from .download import USER_AGENT, http_failure

DRIVE_HOSTS = frozenset({"drive.google.com", "docs.google.com", "drive.usercontent.google.com"})
MAX_PAGE_BYTES = 1 << 20  # a confirmation page is a few kB; never read a file body as a page
MAX_CONFIRMATIONS = 3


def drive_file_id(url: str) -> str | None:
    """The file id of a Google Drive URL (`uc?id=`, `open?id=`, `/file/d/<id>/view`), else None."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in DRIVE_HOSTS:
        return None
    ids = urllib.parse.parse_qs(parts.query).get("id")
    if ids:
        return ids[0]
    match = re.match(r"/file/(?:u/\d+/)?d/([^/]+)", parts.path)
    return match.group(1) if match else None


class _Page(html.parser.HTMLParser):
    """Collects the "Download anyway" link or form and Drive's error text from a page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.link: str | None = None
        self.form_action: str | None = None
        self.form_inputs: list[tuple[str, str]] = []
        self.error: list[str] | None = None
        self._in_form = self._in_error = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and (attrs.get("href") or "").startswith("/uc?export=download") and self.link is None:
            self.link = attrs["href"]
        elif tag == "form" and attrs.get("id") == "download-form" and self.form_action is None:
            self.form_action, self._in_form = attrs.get("action") or "", True
        elif tag == "input" and self._in_form and attrs.get("type") == "hidden" and attrs.get("name"):
            self.form_inputs.append((attrs["name"], attrs.get("value") or ""))
        elif tag == "p" and "uc-error-subcaption" in (attrs.get("class") or "").split():
            self.error, self._in_error = [], True

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False
        elif tag == "p":
            self._in_error = False

    def handle_data(self, data):
        if self._in_error:
            self.error.append(data)


def confirmation_url(page: str, page_url: str) -> str:
    """The URL that the confirmation page's "Download anyway" button requests (as a GET)."""
    parsed = _Page()
    parsed.feed(page)
    if parsed.link:
        return urllib.parse.urljoin(page_url, parsed.link)
    if parsed.form_action is not None:
        action = urllib.parse.urlsplit(urllib.parse.urljoin(page_url, parsed.form_action))
        query = urllib.parse.parse_qs(action.query)
        for name, value in parsed.form_inputs:  # the inputs override the action's query
            query[name] = [value]
        return urllib.parse.urlunsplit(action._replace(query=urllib.parse.urlencode(query, doseq=True)))
    match = re.search(r'"downloadUrl":"([^"]+)', page)
    if match:
        return match.group(1).replace("\\u003d", "=").replace("\\u0026", "&")
    if parsed.error is not None:
        reason = " ".join("".join(parsed.error).split())
        raise DownloadError(f"{page_url}: Google Drive refuses the download: {reason}. Re-run later, or "
                            "download the file in a browser and put it at the output path")
    raise DownloadError(f"{page_url}: Google Drive answered with a page that has no download button; check "
                        "that the file is shared with 'anyone with the link'")


def drive_resolver(url: str):
    """resolve(opener, timeout) for download_file: the URL that sends the file's bytes.

    Each call (each download attempt) starts again from `url`, so a confirmation that expired
    between attempts is renewed; the cookies the pages set stay in the opener's jar.
    """

    def resolve(opener: urllib.request.OpenerDirector, timeout: float) -> str:
        target = url
        for _ in range(MAX_CONFIRMATIONS):
            request = urllib.request.Request(target, headers={"User-Agent": USER_AGENT})
            try:
                response = opener.open(request, timeout=timeout)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                raise http_failure(target, exc) from None
            with response:
                if response.headers.get_content_type() != "text/html":
                    return response.geturl()  # the file itself: its body is requested again, with Range
                try:
                    page = response.read(MAX_PAGE_BYTES).decode("utf-8", "replace")
                except (http.client.HTTPException, OSError) as exc:
                    raise http_failure(target, exc) from None
                page_url = response.geturl()
            target = confirmation_url(page, page_url)
        raise DownloadError(f"{url}: Google Drive kept asking for confirmation; download the file in a "
                            "browser and put it at the output path")

    return resolve
