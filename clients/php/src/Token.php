<?php

declare(strict_types=1);

namespace Synerise\Sidecar;

/** A signed RS256 JWT for Synerise's JS SDK. */
final class Token
{
    public function __construct(
        /** The compact JWT. */
        public readonly string $jwt,
        /** Expiry, Unix seconds. */
        public readonly int $expiresAt,
        /** RFC 7638 thumbprint of the signing key. */
        public readonly string $keyId,
    ) {
    }

    /** @param array<string, mixed> $m */
    public static function fromJson(array $m): self
    {
        return new self((string) ($m['jwt'] ?? ''), Json::timestamp($m['expiresAt'] ?? null), (string) ($m['keyId'] ?? ''));
    }
}
