"""A paste filter in front of Cinder's ``noauth`` middleware (scripts/cinder-local).

Cinder's noauth answers a request without ``X-Auth-Token`` with a "204 fake login",
and keystoneauth (openstacksdk) does its version discovery without one, or with a
placeholder: discovery then fails. This filter fills in noauth's ``user:project``
token (the project from the URL, else X-Auth-Project-Id, else the configured default)
when the request carries none of that form, and answers ``GET /v3/<project>`` with the
version document as a real deployment's endpoint does. It runs inside cinder-api, in
Debian's Python; it is test tooling, never part of the release.
"""

import re

_PROJECT_IN_PATH = re.compile(r"^/([0-9a-f-]+)(?=/|$)")


class FillNoAuthToken:
    def __init__(self, app, default_project):
        self.app = app
        self.default_project = default_project

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        match = _PROJECT_IN_PATH.match(path)
        if ":" not in environ.get("HTTP_X_AUTH_TOKEN", ""):
            user = environ.get("HTTP_X_AUTH_USER", "admin")
            project = (
                (match.group(1) if match else None)
                or environ.get("HTTP_X_AUTH_PROJECT_ID")
                or self.default_project
            )
            environ["HTTP_X_AUTH_TOKEN"] = f"{user}:{project}"
        if match and environ.get("REQUEST_METHOD") == "GET" and path.rstrip("/") == "/" + match.group(1):
            environ["PATH_INFO"] = "/"
        return self.app(environ, start_response)


def filter_factory(global_conf, **local_conf):
    default_project = local_conf.get("default_project", "admin")
    return lambda app: FillNoAuthToken(app, default_project)
