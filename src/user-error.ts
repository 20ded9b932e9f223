/**
 * A failure the user can act on (a bad setting or flag, a store that is not there, a bad
 * export file): commands show its message as one line with no stack trace and exit 2.
 */
export class UserError extends Error {
	constructor(message: string) {
		super(message);
		this.name = new.target.name;
	}
}
