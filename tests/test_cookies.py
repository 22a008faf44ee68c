import pytest

from sidecar.domain.cookies import parse_cookie_header

U = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize(
    ("header", "uuid", "hash_"),
    [
        (f"_snrs_uuid={U}; _snrs_p=host:shop.example&uuid:{U}&identityHash:-374943845&init:1693384058",
         U, "-374943845"),
        (f"a=1;_snrs_uuid={U};b=2", U, ""),
        (f"  _snrs_uuid =  {U}  ;  ", U, ""),
        (f'_snrs_uuid="{U}"', U, ""),
        ("_snrs_p=host:x&uuid:y&identityHash:&init:1", "", ""),
        ("_snrs_p=identityHash:97", "", "97"),
        ("_snrs_p=host%3Ashop.example%26identityHash%3A-5", "", "-5"),
        ("junk; ;;=; novalue; _snrs_uuid", "", ""),
        (f"_snrs_uuid={U}; _snrs_uuid=00000000-0000-0000-0000-000000000000", U, ""),
        ("", "", ""),
        ("x_snrs_uuid=nope; _snrs_uuidx=nope", "", ""),
    ],
)
def test_parse_cookie_header(header, uuid, hash_):
    c = parse_cookie_header(header)
    assert (c.uuid, c.identity_hash) == (uuid, hash_)
