<?php

declare(strict_types=1);

namespace Synerise\Sidecar;

/** The answer of ResolveIdentity: the UUID and hash the customer must carry, and their token. */
final class Resolution
{
    public function __construct(
        public readonly string $uuid,
        public readonly string $identityHash,
        public readonly Outcome $outcome,
        /** Whether the frontend must call SR.client.setUuidAndIdentityHash(uuid, identityHash). */
        public readonly bool $setIdentity,
        public readonly Token $token,
    ) {
    }

    /** @param array<string, mixed> $m */
    public static function fromJson(array $m): self
    {
        return new self(
            (string) ($m['uuid'] ?? ''),
            (string) ($m['identityHash'] ?? ''),
            Outcome::from((string) ($m['outcome'] ?? '')),
            (bool) ($m['setIdentity'] ?? false),
            Token::fromJson(Json::map($m['token'] ?? [])),
        );
    }
}
