<?php

declare(strict_types=1);

namespace Synerise\Sidecar;

/** Whether Synerise would accept an event under the configured event authentication settings. */
final class EventDecision
{
    public function __construct(
        public readonly bool $accepted,
        public readonly bool $requiresJwt,
        /** The deciding rule. */
        public readonly string $rule,
        public readonly string $reason,
    ) {
    }

    /** @param array<string, mixed> $m */
    public static function fromJson(array $m): self
    {
        return new self((bool) ($m['accepted'] ?? false), (bool) ($m['requiresJwt'] ?? false),
            (string) ($m['rule'] ?? ''), (string) ($m['reason'] ?? ''));
    }
}
