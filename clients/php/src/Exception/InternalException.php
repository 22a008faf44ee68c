<?php

declare(strict_types=1);

namespace Synerise\Sidecar\Exception;

/** An unexpected error in the sidecar (details are in its log). */
final class InternalException extends SidecarException
{
}
