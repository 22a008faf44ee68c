<?php

declare(strict_types=1);

namespace Synerise\Sidecar\Exception;

/** The caller is not on the allow-list. */
final class PermissionDeniedException extends SidecarException
{
}
