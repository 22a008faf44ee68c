<?php

declare(strict_types=1);

namespace Synerise\Sidecar\Exception;

/** The call's timeout passed. */
final class DeadlineExceededException extends SidecarException
{
}
