"""Register Cinder in the Keystone that scripts/cinder-local started, and a user for tests.

After ``keystone-manage bootstrap`` (admin user, project, roles, Keystone's own
endpoints), this adds the block-storage service as most clouds name it (``volumev3``)
with public/internal/admin endpoints ``.../v3/%(project_id)s`` in the region, and a
project ``redis`` with a user ``bosh`` holding the member role: what an operator gives
the snapshotter. Prints KEY=VALUE lines for the env file.
Usage: keystone_setup.py KEYSTONE_URL ADMIN_PASSWORD REGION CINDER_BASE USER_PASSWORD
"""

import json
import sys
import urllib.request

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(url, method="GET", body=None, token=None):
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["X-Auth-Token"] = token
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    with OPENER.open(request, timeout=30) as response:
        text = response.read()
        return response.headers, (json.loads(text) if text else {})


def main():
    keystone, admin_password, region, cinder, user_password = sys.argv[1:6]
    auth = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "admin", "domain": {"id": "default"}, "password": admin_password}
                },
            },
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
        }
    }
    headers, _ = call(f"{keystone}/auth/tokens", "POST", auth)
    token = headers["X-Subject-Token"]
    service = call(
        f"{keystone}/services",
        "POST",
        {"service": {"type": "volumev3", "name": "cinderv3", "enabled": True}},
        token,
    )[1]["service"]
    for interface in ("public", "internal", "admin"):
        call(
            f"{keystone}/endpoints",
            "POST",
            {
                "endpoint": {
                    "service_id": service["id"],
                    "interface": interface,
                    "region_id": region,
                    "url": cinder + "/v3/%(project_id)s",
                }
            },
            token,
        )
    project = call(
        f"{keystone}/projects",
        "POST",
        {"project": {"name": "redis", "domain_id": "default"}},
        token,
    )[1]["project"]
    user = call(
        f"{keystone}/users",
        "POST",
        {"user": {"name": "bosh", "domain_id": "default", "password": user_password}},
        token,
    )[1]["user"]
    roles = call(f"{keystone}/roles?name=member", token=token)[1]["roles"]
    call(
        f"{keystone}/projects/{project['id']}/users/{user['id']}/roles/{roles[0]['id']}",
        "PUT",
        None,
        token,
    )
    print(f"KEYSTONE_PROJECT_ID={project['id']}")
    print(f"KEYSTONE_USER_ID={user['id']}")


if __name__ == "__main__":
    main()
