<?php

declare(strict_types=1);

namespace Synerise\Sidecar\Exception;

/** The request broke a rule; the message names the field and the rule. Never retried. */
final class InvalidArgumentException extends SidecarException
{
}
