<?php

declare(strict_types=1);

namespace Synerise\Sidecar;

/** Which branch of the identity flow ResolveIdentity took. */
enum Outcome: string
{
    case NewIdentity = 'OUTCOME_NEW_IDENTITY';
    case SameIdentity = 'OUTCOME_SAME_IDENTITY';
    case SwitchedIdentity = 'OUTCOME_SWITCHED_IDENTITY';
}
