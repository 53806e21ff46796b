"""Recon presets for ``layerslayer find --preset NAME``.

A preset is a named list of patterns with the same rules as the patterns
typed on the command line (:mod:`layerslayer.patterns`): a pattern without
``/`` matches the file name, one with ``/`` the whole path (``*`` matches
``/`` too), so path patterns here start with ``*/`` to match in any home
directory (``*/.aws/credentials`` matches ``root/.aws/credentials`` and
``home/app/.aws/credentials``). Preset patterns always match **case-insensitively**
(``ID_RSA``, ``Server.PEM`` and ``.ENV`` are hits too); patterns typed next
to a preset keep their own case rule (``-i``).

A preset may list ``excludes``: paths its own patterns never match (CA
bundles and the test certificates of language runtimes for ``secrets`` and
``keys``); ``find --exclude`` adds exclusions of the user's for every pattern.

``PRESETS`` is the single source of truth: ``find --list-presets`` prints it,
the README lists it, and the tests check every entry. To add a preset, add a
``Preset`` here; to extend one, append patterns (keep each group's comment).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    patterns: tuple[str, ...]
    #: Paths the preset's own patterns never match (typed patterns are not affected).
    excludes: tuple[str, ...] = ()


_SSH_KEYS = (
    # OpenSSH user keys (private and public halves) and host private keys
    "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk", "id_*.pub",
    "ssh_host_*_key", "authorized_keys", "*.ppk",
)
_KEY_FILES = (
    # private keys and certificate/key stores
    "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.p8", "*.kdbx", "*.keytab",
    "*.ovpn", "secring.gpg", "private-keys-v1.d",
)
_ENV_FILES = (
    # dotenv files and generic secret stores
    ".env*", "*.env", "secrets.y*ml", "secrets.json", "credentials.json", "*service-account*.json",
    "vault.json", ".vault-token",
)
_CLOUD = (
    # cloud provider credentials
    "*/.aws/credentials", "*/.aws/config", "*/.azure/accessTokens.json", "*/.azure/msal_token_cache.json",
    "*/.config/gcloud/credentials.db", "*/.config/gcloud/access_tokens.db", "application_default_credentials.json",
    ".boto", ".s3cfg", "*/.oci/config", "*/.config/doctl/config.yaml", ".terraformrc", "terraform.tfstate*",
    "*.tfvars",
)
_TOOLS = (
    # registry, package-manager and VCS credentials
    "*/.docker/config.json", ".dockercfg", ".npmrc", ".yarnrc", ".pypirc", ".netrc", "_netrc", ".git-credentials",
    "*/.gem/credentials", "*/.cargo/credentials", "*/.cargo/credentials.toml", "*/.composer/auth.json",
    "*/.m2/settings.xml", "*/.gradle/gradle.properties", "*/.nuget/NuGet/NuGet.Config", ".pgpass", ".my.cnf",
    ".htpasswd", "htpasswd",
)
_KUBE = (
    # Kubernetes client configs
    "*/.kube/config", "kubeconfig", "*.kubeconfig", "admin.conf",
)
_PRIVATE_SSH = tuple(p for p in _SSH_KEYS if p not in ("id_*.pub", "authorized_keys"))
_HISTORY = (
    # shell and REPL histories
    ".*_history", ".history", ".lesshst", ".viminfo",
)
_APPS = (
    # application configs that carry passwords
    "wp-config.php", "config.inc.php", "LocalSettings.php", "database.yml", "appsettings*.json",
    "web.config", "credentials.xml", "jenkins.model.JenkinsLocationConfiguration.xml",
)
_VCS = (
    # source-control metadata (remotes with tokens, history of deleted secrets)
    ".git", ".svn", ".hg",
)

_SHADOW = (
    # password hashes: shadow files and their backups, BSD master.passwd, PAM's old passwords, htpasswd
    "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/shadow.bak", "/etc/master.passwd",
    "/etc/spwd.db", "/etc/security/opasswd", ".htpasswd", "htpasswd",
)
# What the secrets and keys presets leave out: public CA bundles and the test
# certificates and keys that language runtimes ship (28 of 31 hits of the
# secrets preset on a Debian + CPython image were these).
_NOISE = (
    "*/ssl/certs/*", "*/ca-certificates/*", "*/ca-certificates.crt", "*/ca-bundle.crt", "*/ca-bundle.trust.crt",
    "*/pki/tls/certs/*", "*/pki/ca-trust/*", "*/certifi/cacert.pem", "*/pip/_vendor/certifi/*", "*/botocore/cacert.pem",
    "*/python[0-9]*/test/*", "*/site-packages/*/tests/*", "*/dist-packages/*/tests/*", "*/site-packages/*/test/*",
    "*/node_modules/*/test/*", "*/node_modules/*/tests/*", "*/node_modules/*/fixtures/*", "*/testdata/*",
    "*/lib/ruby/*/test/*", "*/gems/*/test/*", "*/gems/*/spec/*",
)

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "secrets",
            "private keys and SSH keys, key stores, .env files, cloud and tool credentials, kubeconfigs, "
            "shell histories, VCS directories, application configs with passwords",
            _SSH_KEYS + _KEY_FILES + _ENV_FILES + _CLOUD + _TOOLS + _KUBE + _HISTORY + _APPS + _VCS + _SHADOW,
            _NOISE,
        ),
        Preset("ssh", "SSH private/public keys, host keys, authorized_keys", _SSH_KEYS),
        Preset("keys", "private keys, certificates and key stores", _PRIVATE_SSH + _KEY_FILES, _NOISE),
        Preset("shadow", "password hash files: /etc/shadow, gshadow and their backups, master.passwd, htpasswd",
               _SHADOW),
        Preset("cloud", "cloud, registry, package-manager and Kubernetes credentials", _CLOUD + _TOOLS + _KUBE),
        Preset("history", "shell and REPL histories", _HISTORY),
    )
}


def get_preset(name: str) -> Preset:
    "The preset called ``name``; KeyError with the list of names otherwise."
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r} (presets: {', '.join(PRESETS)})") from None


def format_presets() -> str:
    "The text ``find --list-presets`` prints: each preset, then its patterns."
    lines = []
    for preset in PRESETS.values():
        lines.append(f"{preset.name}: {preset.description}")
        lines.append("    " + " ".join(preset.patterns))
        if preset.excludes:
            lines.append("    except " + " ".join(preset.excludes))
    return "\n".join(lines)
