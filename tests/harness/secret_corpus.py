"""A planted-secrets corpus: files, config Env/Labels and build steps that hold
one secret of every detector class, plus decoys that must not match.

Every value is made up here (random, seeded) in the vendor's format; none is
a live credential. ``PLANTED`` lists (path, detector) pairs a scanner must
report; ``DECOYS`` lists files in which it must report nothing. Independent of
layerslayer (harness rule): plain Python plus ``cryptography`` for real keys.
"""

from __future__ import annotations

import base64
import json
import random
import string

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

_rng = random.Random(1515)
ALNUM = string.ascii_letters + string.digits


def rand(n: int, alphabet: str = ALNUM) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _pem_rsa() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def _pem_pkcs8() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _openssh() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()


def _pgp() -> str:
    body = base64.b64encode(_rng.randbytes(600)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n" + "\n".join(lines) + "\n=" + rand(4) + "\n-----END PGP PRIVATE KEY BLOCK-----\n"


def _jwt() -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps({"sub": rand(8), "name": "svc", "iat": 1700000000}).encode())
    return f"{header}.{payload}.{_b64url(_rng.randbytes(32))}"


AWS_KEY_ID = "AKIA" + rand(16, string.ascii_uppercase + string.digits)
AWS_SECRET = rand(40, ALNUM + "/+")
AWS_ENV_KEY_ID = "AKIA" + rand(16, string.ascii_uppercase + string.digits)
AWS_ENV_SECRET = rand(40, ALNUM + "/+")
GITHUB = "ghp_" + rand(36)
GITHUB_ARG = "ghp_" + rand(36)
GITLAB = "glpat-" + rand(20)
SLACK_TOKEN = f"xoxb-{rand(11, string.digits)}-{rand(12, string.digits)}-{rand(24, string.ascii_lowercase + string.digits)}"
SLACK_HOOK = f"https://hooks.slack.com/services/T{rand(8, string.ascii_uppercase)}/B{rand(8, string.ascii_uppercase)}/{rand(24)}"
STRIPE = "sk_live_" + rand(24)
STRIPE_LABEL = "rk_live_" + rand(24)
JWT = _jwt()
NPM = "npm_" + rand(36)
PYPI = "pypi-AgEIcHlwaS5vcmc" + rand(80, ALNUM + "-_")
AZURE = base64.b64encode(_rng.randbytes(64)).decode()
DOCKER_AUTH = base64.b64encode(b"deployer:" + rand(20).encode()).decode()
BASIC_URL_PASSWORD = rand(14)
DB_PASSWORD = "Pw-" + rand(14)
ENV_DB_PASSWORD = "Pw-" + rand(14)
ARG_PASSWORD = "Pw-" + rand(14)
RSA_PEM = _pem_rsa()
EC_PEM = _pem_pkcs8()
OPENSSH = _openssh()
PGP = _pgp()
GCP_PEM = _pem_pkcs8()
GHOST_PEM = _pem_rsa()


def _gcp_json() -> str:
    return json.dumps({
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": rand(40, "0123456789abcdef"),
        "private_key": GCP_PEM,
        "client_email": "svc@demo-project.iam.gserviceaccount.com",
        "client_id": rand(21, string.digits),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    }, indent=2) + "\n"


#: path -> content of the files with planted secrets (the base layer of the corpus image).
FILES: dict[str, bytes] = {
    "root/.ssh/id_rsa": RSA_PEM.encode(),
    "etc/ssl/private/server.key": EC_PEM.encode(),
    "home/app/.ssh/id_ed25519": OPENSSH.encode(),
    "home/app/.gnupg/private.asc": PGP.encode(),
    "app/config/gcp-sa.json": _gcp_json().encode(),
    "app/settings.py": (
        "import os\n\nDEBUG = False\n"
        f"AWS_ACCESS_KEY_ID = \"{AWS_KEY_ID}\"\n"
        f"aws_secret_access_key = \"{AWS_SECRET}\"\n"
        f"DATABASE_URL = \"postgres://app:{BASIC_URL_PASSWORD}@db.internal:5432/app\"\n"
        f"STRIPE_KEY = \"{STRIPE}\"\n"
    ).encode(),
    "app/.env": (
        f"DB_PASSWORD={DB_PASSWORD}\nAZURE_STORAGE=DefaultEndpointsProtocol=https;AccountName=demo;"
        f"AccountKey={AZURE};EndpointSuffix=core.windows.net\n"
    ).encode(),
    "app/deploy.sh": (
        "#!/bin/sh\nset -e\n"
        f"curl -H 'Authorization: token {GITHUB}' https://api.github.com/user\n"
        f"git clone https://oauth2:{GITLAB}@gitlab.example.org/group/repo.git\n"
        f"curl -X POST -d '{{\"text\":\"done\"}}' {SLACK_HOOK}\n"
    ).encode(),
    "app/bot.yaml": f"slack:\n  token: {SLACK_TOKEN}\n".encode(),
    "app/session.txt": f"Authorization: Bearer {JWT}\n".encode(),
    "root/.npmrc": f"//registry.npmjs.org/:_authToken={NPM}\n".encode(),
    "root/.pypirc": f"[pypi]\nusername = __token__\npassword = {PYPI}\n".encode(),
    "root/.docker/config.json": json.dumps({"auths": {"registry.example.com": {"auth": DOCKER_AUTH}}}, indent=2).encode(),
    # decoys: nothing in these may match
    "usr/share/doc/aws/example.py": (
        b"# from the AWS docs\naws_access_key_id = \"AKIAIOSFODNN7EXAMPLE\"\n"
        b"aws_secret_access_key = \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"\n"
    ),
    "app/config.env.template": b"DB_PASSWORD=changeme\nAPI_SECRET=<your secret here>\n",
    "app/defaults.ini": b"[db]\npassword = changeme\nsecret = ${DB_SECRET}\n",
    "usr/lib/python3/site-packages/demo/auth.py": (
        b"def login(user, password):\n    password = getpass.getpass()\n    return check(user, password)\n"
    ),
    "usr/share/doc/demo/README": b"Connect with https://user:password@host/ or -----BEGIN PRIVATE KEY----- in docs.\n",
}

#: A file with a key that a later layer deletes (a ghost finding).
GHOST_PATH = "root/.ssh/deploy_key"
GHOST_FILE = GHOST_PEM.encode()

#: Config Env, Labels and build steps of the corpus image.
ENV = [
    "PATH=/usr/local/bin:/usr/bin:/bin",
    f"AWS_ACCESS_KEY_ID={AWS_ENV_KEY_ID}",
    f"AWS_SECRET_ACCESS_KEY={AWS_ENV_SECRET}",
    f"DB_PASSWORD={ENV_DB_PASSWORD}",
    "APP_PASSWORD=changeme",
]
LABELS = {"org.opencontainers.image.title": "corpus", "com.example.billing": STRIPE_LABEL}
HISTORY = [
    f"|2 GITHUB_TOKEN={GITHUB_ARG} DB_PASSWORD={ARG_PASSWORD} /bin/sh -c make install",
    "/bin/sh -c rm -f /root/.ssh/deploy_key",
    "/bin/sh -c #(nop)  ARG AWS_KEY=AKIAIOSFODNN7EXAMPLE",
]

#: (path, detector) that a scanner must report among the files.
PLANTED_FILES = [
    ("root/.ssh/id_rsa", "private-key"),
    ("etc/ssl/private/server.key", "private-key"),
    ("home/app/.ssh/id_ed25519", "private-key"),
    ("home/app/.gnupg/private.asc", "private-key"),
    ("app/config/gcp-sa.json", "gcp-service-account"),
    ("app/settings.py", "aws-access-key-id"),
    ("app/settings.py", "aws-secret-access-key"),
    ("app/settings.py", "basic-auth-url"),
    ("app/settings.py", "stripe-key"),
    ("app/.env", "password-assignment"),
    ("app/.env", "azure-storage-key"),
    ("app/deploy.sh", "github-token"),
    ("app/deploy.sh", "gitlab-token"),
    ("app/deploy.sh", "slack-webhook"),
    ("app/bot.yaml", "slack-token"),
    ("app/session.txt", "jwt"),
    ("root/.npmrc", "npm-token"),
    ("root/.pypirc", "pypi-token"),
    ("root/.docker/config.json", "docker-auth"),
]
DECOY_FILES = [
    "usr/share/doc/aws/example.py", "app/config.env.template", "app/defaults.ini",
    "usr/lib/python3/site-packages/demo/auth.py", "usr/share/doc/demo/README",
]
#: (source, name, detector) expected from the config and history.
PLANTED_CONFIG = [
    ("env", "AWS_ACCESS_KEY_ID", "aws-access-key-id"),
    ("env", "AWS_SECRET_ACCESS_KEY", "aws-secret-access-key"),
    ("env", "DB_PASSWORD", "password-assignment"),
    ("label", "com.example.billing", "stripe-key"),
    ("history", "0", "github-token"),
    ("history", "0", "password-assignment"),
]
