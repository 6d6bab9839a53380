"""Log-in against a directory (issue 27): a real slapd (Debian's), started by the test with
its own configuration on a free loopback port; LDAP simple bind as the user, roles from its
groups through [web.ldap.roles], lockout and audit entries as for a local account."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.web_helpers import Site, make_site, running
from uns.audit.trail import audit_log
from uns.config_web import ldap_settings
from uns.users.ldap import DirectoryUnavailable, LdapDirectory

SLAPD = "/usr/sbin/slapd"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not Path(SLAPD).exists() or shutil.which("ldapadd") is None,
        reason="slapd and ldap-utils are not installed (bash scripts/setup.sh --dev installs them as root)",
    ),
]
SUFFIX = "dc=plant,dc=example"
ROOT_PW = "slapd-root-secret"
CONF = """include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "cn=admin,{suffix}"
rootpw {root_pw}
directory {dir}/db
"""
DATA = """dn: {suffix}
objectClass: dcObject
objectClass: organization
o: plant
dc: plant

dn: ou=people,{suffix}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{suffix}
objectClass: organizationalUnit
ou: groups

dn: uid=asmith,ou=people,{suffix}
objectClass: inetOrgPerson
uid: asmith
cn: Anna Smith
sn: Smith
userPassword: directory password 1

dn: uid=nogroup,ou=people,{suffix}
objectClass: inetOrgPerson
uid: nogroup
cn: No Group
sn: Group
userPassword: directory password 2

dn: cn=QA-Approvers,ou=groups,{suffix}
objectClass: groupOfNames
cn: QA-Approvers
member: uid=asmith,ou=people,{suffix}

dn: cn=qa-reviewers,ou=groups,{suffix}
objectClass: groupOfNames
cn: qa-reviewers
member: uid=asmith,ou=people,{suffix}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A slapd with people and groups on a free loopback port; its URL."""
    folder = tmp_path_factory.mktemp("slapd")
    (folder / "db").mkdir()
    conf = folder / "slapd.conf"
    conf.write_text(CONF.format(dir=folder, suffix=SUFFIX, root_pw=ROOT_PW))
    port = _free_port()
    url = f"ldap://127.0.0.1:{port}"
    log = (folder / "slapd.log").open("w")
    proc = subprocess.Popen([SLAPD, "-f", str(conf), "-h", f"{url}/", "-d", "0"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, (folder / "slapd.log").read_text()
            assert time.monotonic() < deadline, "slapd did not listen within 30 s"
            time.sleep(0.05)
        ldif = folder / "data.ldif"
        ldif.write_text(DATA.format(suffix=SUFFIX))
        add = ["ldapadd", "-x", "-H", url, "-D", f"cn=admin,{SUFFIX}", "-w", ROOT_PW, "-f", str(ldif)]
        subprocess.run(add, check=True, capture_output=True)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _options(url: str) -> dict[str, str]:
    return {
        "url": url,
        "user_dn": f"uid={{user}},ou=people,{SUFFIX}",
        "group_base": f"ou=groups,{SUFFIX}",
        "roles.qa-approvers": "approver",
        "roles.qa-reviewers": "reviewer",
    }


def test_the_directory_says_who_may_log_in_and_with_which_roles(slapd: str) -> None:
    settings = ldap_settings(tuple(sorted(_options(slapd).items())))
    assert settings is not None
    directory = LdapDirectory(settings)
    anna = directory.authenticate("asmith", "directory password 1")
    assert anna is not None and (anna.full_name, anna.roles, anna.source) == (
        "Anna Smith", ("reviewer", "approver"), "ldap"
    )  # fmt: skip
    assert directory.authenticate("asmith", "wrong") is None
    assert directory.authenticate("asmith", "") is None  # never an anonymous bind
    assert directory.authenticate("nobody", "x") is None
    assert directory.authenticate("asmith,ou=people", "directory password 1") is None  # escaped: no injection
    nogroup = directory.authenticate("nogroup", "directory password 2")
    assert nogroup is not None and nogroup.roles == ()
    down = ldap_settings((("url", "ldap://127.0.0.1:1"), ("user_dn", "uid={user},o=x"), ("timeout_s", "2")))
    assert down is not None
    with pytest.raises(DirectoryUnavailable, match="cannot be"):
        LdapDirectory(down).authenticate("asmith", "x")


@pytest.fixture(scope="module")
def site(slapd: str, tmp_path_factory: pytest.TempPathFactory) -> Site:
    return make_site(tmp_path_factory.mktemp("ldap-web"), ldap=tuple(sorted(_options(slapd).items())))


def test_a_directory_user_logs_in_to_the_workspace(site: Site) -> None:
    with running(site.cfg) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        answer = client.post("/api/session", json={"username": "asmith", "password": "directory password 1"})
        assert answer.status_code == 200, answer.text
        assert (
            answer.json()["roles"] == ["reviewer", "approver"] and answer.json()["full_name"] == "Anna Smith"
        )
        assert client.get("/api/batches").status_code == 200
        refused = client.post(
            "/api/session", json={"username": "nogroup", "password": "directory password 2"}
        )
        assert refused.status_code == 403  # in the directory, but no group gives a role
        for _ in range(2):
            assert (
                client.post("/api/session", json={"username": "asmith", "password": "x"}).status_code == 401
            )
        assert client.post("/api/session", json={"username": "asmith", "password": "x"}).status_code == 423
        right = client.post("/api/session", json={"username": "asmith", "password": "directory password 1"})
        assert right.status_code == 423  # locked by uns, whatever the directory says
        local = client.post("/api/session", json={"username": "rev1", "password": "reviewer one password"})
        assert local.status_code == 200  # the accounts of `uns users` still log in
    login = audit_log(str(site.lake), kind="login", user="asmith", parse_detail=True)
    assert [e[7]["source"] for e in login] == ["ldap"]
    assert [e[3] for e in audit_log(str(site.lake), user="asmith")].count("lockout") == 1
