<?php

declare(strict_types=1);

namespace Synerise\Sidecar\Exception;

/** Rate limit or concurrency bound reached. */
final class ResourceExhaustedException extends SidecarException
{
}
