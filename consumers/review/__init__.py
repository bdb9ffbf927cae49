"""The review console: suggestions for people to approve or reject in a browser.

`service` runs it; `routes` maps URLs to the rest: `security` (who may), `views`
(what a page shows), `deciding` (a decision, for the console and the HTTP API alike),
`live` (pages kept current), over `readmodel` (the console's tables).
"""

from consumers.review.service import NAME, ReviewConsole, build

__all__ = ["NAME", "ReviewConsole", "build"]
