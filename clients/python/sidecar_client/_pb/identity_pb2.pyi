import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_NEW_IDENTITY: _ClassVar[Outcome]
    OUTCOME_SAME_IDENTITY: _ClassVar[Outcome]
    OUTCOME_SWITCHED_IDENTITY: _ClassVar[Outcome]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_NEW_IDENTITY: Outcome
OUTCOME_SAME_IDENTITY: Outcome
OUTCOME_SWITCHED_IDENTITY: Outcome

class Token(_message.Message):
    __slots__ = ("jwt", "expires_at", "key_id")
    JWT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    jwt: str
    expires_at: _timestamp_pb2.Timestamp
    key_id: str
    def __init__(self, jwt: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key_id: _Optional[str] = ...) -> None: ...

class ResolveIdentityRequest(_message.Message):
    __slots__ = ("email", "identity_hash", "cookie_uuid", "cookie_header", "ttl")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_HASH_FIELD_NUMBER: _ClassVar[int]
    COOKIE_UUID_FIELD_NUMBER: _ClassVar[int]
    COOKIE_HEADER_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    email: str
    identity_hash: str
    cookie_uuid: str
    cookie_header: str
    ttl: _duration_pb2.Duration
    def __init__(self, email: _Optional[str] = ..., identity_hash: _Optional[str] = ..., cookie_uuid: _Optional[str] = ..., cookie_header: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ResolveIdentityResponse(_message.Message):
    __slots__ = ("uuid", "identity_hash", "outcome", "set_identity", "token")
    UUID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_HASH_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SET_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    identity_hash: str
    outcome: Outcome
    set_identity: bool
    token: Token
    def __init__(self, uuid: _Optional[str] = ..., identity_hash: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., set_identity: _Optional[bool] = ..., token: _Optional[_Union[Token, _Mapping]] = ...) -> None: ...

class IssueTokenRequest(_message.Message):
    __slots__ = ("email", "uuid", "ttl")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    email: str
    uuid: str
    ttl: _duration_pb2.Duration
    def __init__(self, email: _Optional[str] = ..., uuid: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class IssueTokenResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: Token
    def __init__(self, token: _Optional[_Union[Token, _Mapping]] = ...) -> None: ...

class GetPublicKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPublicKeyResponse(_message.Message):
    __slots__ = ("pem", "certificate_code", "certificate_code_bare", "jwk", "key_id", "bits", "next_key")
    PEM_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_CODE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_CODE_BARE_FIELD_NUMBER: _ClassVar[int]
    JWK_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_KEY_FIELD_NUMBER: _ClassVar[int]
    pem: str
    certificate_code: str
    certificate_code_bare: str
    jwk: str
    key_id: str
    bits: int
    next_key: NextKey
    def __init__(self, pem: _Optional[str] = ..., certificate_code: _Optional[str] = ..., certificate_code_bare: _Optional[str] = ..., jwk: _Optional[str] = ..., key_id: _Optional[str] = ..., bits: _Optional[int] = ..., next_key: _Optional[_Union[NextKey, _Mapping]] = ...) -> None: ...

class NextKey(_message.Message):
    __slots__ = ("pem", "certificate_code", "certificate_code_bare", "key_id", "activates_at")
    PEM_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_CODE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_CODE_BARE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVATES_AT_FIELD_NUMBER: _ClassVar[int]
    pem: str
    certificate_code: str
    certificate_code_bare: str
    key_id: str
    activates_at: _timestamp_pb2.Timestamp
    def __init__(self, pem: _Optional[str] = ..., certificate_code: _Optional[str] = ..., certificate_code_bare: _Optional[str] = ..., key_id: _Optional[str] = ..., activates_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class VerifyTokenRequest(_message.Message):
    __slots__ = ("jwt",)
    JWT_FIELD_NUMBER: _ClassVar[int]
    jwt: str
    def __init__(self, jwt: _Optional[str] = ...) -> None: ...

class VerifyTokenResponse(_message.Message):
    __slots__ = ("valid", "reason", "email", "uuid", "expires_at", "key_id")
    VALID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    reason: str
    email: str
    uuid: str
    expires_at: _timestamp_pb2.Timestamp
    key_id: str
    def __init__(self, valid: _Optional[bool] = ..., reason: _Optional[str] = ..., email: _Optional[str] = ..., uuid: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key_id: _Optional[str] = ...) -> None: ...

class EvaluateEventRequest(_message.Message):
    __slots__ = ("action", "jwt", "changes_customer_data")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    JWT_FIELD_NUMBER: _ClassVar[int]
    CHANGES_CUSTOMER_DATA_FIELD_NUMBER: _ClassVar[int]
    action: str
    jwt: str
    changes_customer_data: bool
    def __init__(self, action: _Optional[str] = ..., jwt: _Optional[str] = ..., changes_customer_data: _Optional[bool] = ...) -> None: ...

class EvaluateEventResponse(_message.Message):
    __slots__ = ("accepted", "requires_jwt", "rule", "reason")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_JWT_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    requires_jwt: bool
    rule: str
    reason: str
    def __init__(self, accepted: _Optional[bool] = ..., requires_jwt: _Optional[bool] = ..., rule: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
