/** Every workflow the billing worker runs (the bundle's entry point). */
export {};
