<?php

declare(strict_types=1);

namespace Synerise\Sidecar;

/** VerifyToken's verdict: valid with its claims, or why not. */
final class Verification
{
    public function __construct(
        public readonly bool $valid,
        /** Why not (empty when valid), e.g. "expired", "bad_signature", "malformed". */
        public readonly string $reason,
        public readonly string $email,
        public readonly string $uuid,
        /** Unix seconds (0 when not valid). */
        public readonly int $expiresAt,
        public readonly string $keyId,
    ) {
    }

    /** @param array<string, mixed> $m */
    public static function fromJson(array $m): self
    {
        return new self(
            (bool) ($m['valid'] ?? false),
            (string) ($m['reason'] ?? ''),
            (string) ($m['email'] ?? ''),
            (string) ($m['uuid'] ?? ''),
            isset($m['expiresAt']) ? Json::timestamp($m['expiresAt']) : 0,
            (string) ($m['keyId'] ?? ''),
        );
    }
}
