"""MkDocs hook: render the Sphinx roles of diffsde's docstrings as links.

The docstrings cross-reference with reST roles (``:func:`diffsde.sample```), which
Markdown renders literally as ``:func:<code>diffsde.sample</code>``. This hook turns each
into an *optional* autorefs reference: a link when the target is documented in the API
pages, plain code otherwise (so a role never breaks ``mkdocs build --strict``; the
theory and tutorial pages use ordinary, checked ``[name][path]`` references instead).
A leading ``~`` shows only the last component, as in Sphinx. A bare name on an API page
(``:func:`vlb```) is looked up in that page's module first, then in ``diffsde``.
"""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|exc|obj):<code>(~?)([\w.]+)(\(\))?</code>")


def _linker(module: str | None):
    def link(match: re.Match) -> str:
        short, path, call = match.group(1), match.group(2), match.group(3) or ""
        title = path.rsplit(".", 1)[-1] if short else path
        if path.startswith("diffsde") or module is None:
            attrs = f'identifier="{path}"'
        else:  # autorefs tries the identifier, then the slug
            attrs = f'identifier="{module}.{path}" slug="diffsde.{path}"'
        return f'<autoref optional {attrs}><code>{title}{call}</code></autoref>'

    return link


def on_page_content(html: str, page, **kwargs) -> str:
    source = page.file.src_uri
    module = "diffsde." + source[len("api/"):-len(".md")] if source.startswith("api/") else None
    return ROLE.sub(_linker(module), html)
