<?php

declare(strict_types=1);

namespace Synerise\Sidecar\Exception;

/** The sidecar is not reachable or has no usable key. Retried (the only code that is). */
final class UnavailableException extends SidecarException
{
}
