<?php

// PSR-4 autoloading of Synerise\Sidecar\ without Composer: `require 'clients/php/autoload.php';`.
// With Composer, its own autoloader reads composer.json instead.

declare(strict_types=1);

spl_autoload_register(static function (string $class): void {
    $prefix = 'Synerise\\Sidecar\\';
    if (str_starts_with($class, $prefix)) {
        $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
