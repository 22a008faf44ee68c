from sidecar.v1 import identity_pb2 as pb


def test_fixture_server_answers_on_tcp_and_unix(start_server):
    s = start_server()
    for t in ("tcp", "unix"):
        r = s.stub(t).IssueToken(pb.IssueTokenRequest(email="a@b.c", uuid="345d4c8f-5aff-591d-a19c-1ca48923d9ee"))
        assert r.token.key_id == s.sidecar.keys.current.key_id


def test_spawned_sidecar(spawn_sidecar):
    p = spawn_sidecar()
    code, err = p.stop()
    assert code == 0, err
