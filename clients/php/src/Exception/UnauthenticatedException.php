<?php

declare(strict_types=1);

namespace Synerise\Sidecar\Exception;

/** The caller presented no client certificate. */
final class UnauthenticatedException extends SidecarException
{
}
