<?php

declare(strict_types=1);

namespace Synerise\Sidecar\Exception;

/** No such method or service. */
final class NotFoundException extends SidecarException
{
}
