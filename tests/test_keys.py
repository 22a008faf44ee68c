import json
import os
import stat
import subprocess

import pytest
from joserfc.jwk import RSAKey

from sidecar.domain import keys
from sidecar.domain.errors import UnusableKey


def test_loads_the_three_documented_forms(openssl_keys, odd_keys):
    a = keys.load(str(openssl_keys / "private.pem"))
    b = keys.load(str(openssl_keys / "private.der"))
    c = keys.load(str(odd_keys / "pkcs1.pem"))
    d = keys.load(str(odd_keys / "encrypted.pem"), str(odd_keys / "pass.txt"))
    assert a.key_id == b.key_id == c.key_id == d.key_id
    assert a.bits == 2048


def test_public_forms_match_openssl(openssl_keys):
    k = keys.load(str(openssl_keys / "private.pem"))
    public_pem = (openssl_keys / "public.pem").read_text()
    assert k.public_pem == public_pem
    one_line = "".join(public_pem.splitlines())
    assert k.certificate_code == one_line
    assert "\n" not in k.certificate_code and k.certificate_code.startswith("-----BEGIN PUBLIC KEY-----MII")
    assert k.certificate_code_bare == "".join(public_pem.splitlines()[1:-1])
    assert " " not in k.certificate_code_bare


def test_key_id_is_the_rfc7638_thumbprint_by_an_independent_library(openssl_keys):
    k = keys.load(str(openssl_keys / "private.pem"))
    jose_key = RSAKey.import_key((openssl_keys / "public.pem").read_text())
    assert k.key_id == jose_key.thumbprint()
    jwk = k.public_jwk()
    assert jwk["kid"] == k.key_id and jwk["alg"] == "RS256"
    assert {x: jwk[x] for x in ("n", "e", "kty")} == {x: jose_key.as_dict()[x] for x in ("n", "e", "kty")}
    assert "d" not in jwk and "p" not in jwk


@pytest.mark.parametrize(
    ("name", "passfile", "message"),
    [
        ("missing.pem", None, "does not exist"),
        ("empty.pem", None, "is empty"),
        ("garbage.pem", None, "not a private key"),
        ("random.bin", None, "not a private key"),
        ("rsa1024.pem", None, "has 1024 bits; at least 2048"),
        ("ec.pem", None, "is not an RSA key"),
        ("ed25519.pem", None, "is not an RSA key"),
        ("encrypted.pem", None, "encrypted; set SIDECAR_KEY_PASSPHRASE_FILE"),
        ("encrypted.pem", "wrong-pass.txt", "wrong passphrase"),
        ("encrypted.pem", "missing-pass.txt", "passphrase file"),
    ],
)
def test_refusals_name_the_file_and_the_problem(odd_keys, name, passfile, message):
    with pytest.raises(UnusableKey) as exc:
        keys.load(str(odd_keys / name), str(odd_keys / passfile) if passfile else None)
    text = str(exc.value)
    assert message in text and "\n" not in text
    assert text.startswith(("key file", "passphrase file"))


def test_directory_is_refused(tmp_path):
    with pytest.raises(UnusableKey, match="is a directory"):
        keys.load(str(tmp_path))


def test_keygen_writes_what_openssl_reads(tmp_path):
    key = keys.generate()
    written = keys.write_keypair(key, str(tmp_path))
    assert [p.name for p in written] == ["private.pem", "private.der", "public.pem"]
    for name in ("private.pem", "private.der"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    assert (tmp_path / "private.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    check = subprocess.run(["openssl", "rsa", "-in", "private.pem", "-check", "-noout"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert check.returncode == 0 and "RSA key ok" in check.stdout
    # The guide's second and third commands, run on our private.pem, give our other two files.
    der = subprocess.run(["openssl", "pkcs8", "-topk8", "-inform", "pem", "-in", "private.pem", "-outform", "DER",
                          "-nocrypt"], cwd=tmp_path, capture_output=True, check=True).stdout
    assert der == (tmp_path / "private.der").read_bytes()
    pub = subprocess.run(["openssl", "rsa", "-pubout"], input=(tmp_path / "private.pem").read_bytes(),
                         capture_output=True, check=True).stdout
    assert pub == (tmp_path / "public.pem").read_bytes()
    assert keys.load(str(tmp_path / "private.der")).key_id == key.key_id


def test_keygen_never_overwrites(tmp_path):
    keys.write_keypair(keys.generate(), str(tmp_path))
    before = (tmp_path / "private.pem").read_bytes()
    with pytest.raises(UnusableKey, match="already exists"):
        keys.write_keypair(keys.generate(), str(tmp_path))
    assert (tmp_path / "private.pem").read_bytes() == before


def test_repr_never_shows_private_material(openssl_keys):
    k = keys.load(str(openssl_keys / "private.pem"))
    text = repr(k) + str(k) + json.dumps(k.public_jwk())
    d = k.private_key.private_numbers().d
    assert str(d) not in text and "PRIVATE" not in text and "private_key" not in text
