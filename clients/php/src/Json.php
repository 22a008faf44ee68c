<?php

declare(strict_types=1);

namespace Synerise\Sidecar;

/** @internal proto3 JSON helpers. */
final class Json
{
    /** A google.protobuf.Timestamp in proto3 JSON ("2026-12-04T18:00:00Z") as Unix seconds. */
    public static function timestamp(mixed $value): int
    {
        if (!is_string($value) || $value === '') {
            return 0;
        }
        $t = new \DateTimeImmutable($value);
        return $t->getTimestamp();
    }

    /** @return array<string, mixed> */
    public static function map(mixed $value): array
    {
        return is_array($value) ? $value : [];
    }
}
