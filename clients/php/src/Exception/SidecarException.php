<?php

declare(strict_types=1);

namespace Synerise\Sidecar\Exception;

/**
 * A call the sidecar refused or could not answer. One subclass per Connect error code;
 * getMessage() is the sidecar's text (e.g. "email: must contain exactly one '@' ...").
 */
class SidecarException extends \RuntimeException
{
    /** Connect error code -> exception class. */
    private const CLASSES = [
        'invalid_argument' => InvalidArgumentException::class,
        'unavailable' => UnavailableException::class,
        'deadline_exceeded' => DeadlineExceededException::class,
        'resource_exhausted' => ResourceExhaustedException::class,
        'permission_denied' => PermissionDeniedException::class,
        'unauthenticated' => UnauthenticatedException::class,
        'not_found' => NotFoundException::class,
        'internal' => InternalException::class,
    ];

    public function __construct(
        string $message,
        /** The Connect error code: "invalid_argument", "unavailable", ... */
        public readonly string $errorCode,
        /** The HTTP status of the answer (0: no answer, e.g. the connection failed). */
        public readonly int $httpStatus = 0,
        ?\Throwable $previous = null,
    ) {
        parent::__construct($message, 0, $previous);
    }

    /** The exception for a Connect error code. */
    public static function of(string $code, string $message, int $httpStatus = 0): self
    {
        $class = self::CLASSES[$code] ?? self::class;
        return new $class($message, $code, $httpStatus);
    }
}
