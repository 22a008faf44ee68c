<?php

declare(strict_types=1);

namespace Synerise\Sidecar;

/** The active signing key, in every form Synerise and JOSE tooling accept. */
final class PublicKey
{
    public function __construct(
        public readonly string $pem,
        /** One line, with header and footer: what is pasted into Synerise. */
        public readonly string $certificateCode,
        /** One line, without header and footer. */
        public readonly string $certificateCodeBare,
        /** The public JWK, as JSON text. */
        public readonly string $jwk,
        public readonly string $keyId,
        public readonly int $bits,
    ) {
    }

    /** @param array<string, mixed> $m */
    public static function fromJson(array $m): self
    {
        return new self(
            (string) ($m['pem'] ?? ''),
            (string) ($m['certificateCode'] ?? ''),
            (string) ($m['certificateCodeBare'] ?? ''),
            (string) ($m['jwk'] ?? ''),
            (string) ($m['keyId'] ?? ''),
            (int) ($m['bits'] ?? 0),
        );
    }
}
